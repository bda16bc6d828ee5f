package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/redisjobs"
)

// poolWorld is a stack whose serve replicas hold no Vault login: plans and
// applies run on `twokey runner` workers, staging on pool nonprod and prod
// on pool prod, each pool logging in with its own AppRole.
type poolWorld struct {
	*stack
	serveConfig string
	runnerEnv   map[string]map[string]string // pool → environment
	rdb         *redis.Client
	workers     int
}

func newPoolWorld(t *testing.T) *poolWorld {
	t.Helper()
	s := newStack(t, func(c *stackConfig) { c.lockTTL = "10s"; c.acl = true })
	w := &poolWorld{stack: s, runnerEnv: map[string]map[string]string{}}
	for _, pool := range []string{"nonprod", "prod"} {
		base := filepath.Join(s.keys, "runner-"+pool)
		if _, err := attest.WriteKeyPair(base); err != nil {
			t.Fatal(err)
		}
		s.runnerKeys = append(s.runnerKeys, base+".pub")
	}
	cfg := s.baseConfig(filepath.Join(s.dir, "data-serve"), stacktest.Tool(t, "terraform"))
	embedded := false
	cfg.Runner.Embedded, cfg.Runner.VisibilityTimeout = &embedded, config.Duration(2*time.Second)
	cfg.Pools = []config.Pool{{Name: "nonprod", Vault: config.VaultAuth{Method: "approle"}}, {Name: "prod", Vault: config.VaultAuth{Method: "approle"}}}
	cfg.Projects[0].Environments[0].Pool = "nonprod"
	cfg.Projects[0].Environments[1].Pool = "prod"
	w.serveConfig = s.write("serve.yaml", cfg)
	for _, pool := range []string{"nonprod", "prod"} {
		roleID, secretID, err := s.vault.AppRole(context.Background(), "twokey-runner-"+pool, "twokey-runner-"+pool)
		if err != nil {
			t.Fatal(err)
		}
		up := strings.ToUpper(pool)
		w.runnerEnv[pool] = map[string]string{"VAULT_" + up + "_ROLE_ID": roleID, "VAULT_" + up + "_SECRET_ID": secretID,
			"GITHUB_TOKEN": githubToken, "TWOKEY_PLAN_KEY_" + up: poolPlanKey(pool),
			"TWOKEY_REDIS_PASSWORD": redisPassword("twokey-runner-" + pool)}
	}
	w.rdb = s.redisAs("")
	return w
}

// editServeConfig changes serve's config (and so the workers' started
// after it).
func (w *poolWorld) editServeConfig(edit func(*config.Config)) {
	w.t.Helper()
	cfg := w.serveCfg()
	edit(cfg)
	w.serveConfig = w.write("serve.yaml", cfg)
}

// serveCfg reads serve's config.
func (w *poolWorld) serveCfg() *config.Config {
	w.t.Helper()
	b, err := os.ReadFile(w.serveConfig)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg, err := config.Parse(strings.NewReader(string(b)))
	if err != nil {
		w.t.Fatal(err)
	}
	return cfg
}

// startServe starts a serve replica with no Vault credential at all.
func (w *poolWorld) startServe(flags ...string) *botProcess {
	w.t.Helper()
	before := w.slack.Connections()
	p := w.startProcess(append([]string{"serve", "--config", w.serveConfig, "--sweep-interval", "200ms"}, flags...), map[string]string{
		"SLACK_BOT_TOKEN": w.env("SLACK_BOT_TOKEN"), "SLACK_APP_TOKEN": w.env("SLACK_APP_TOKEN"),
		"GITHUB_TOKEN": githubToken, "TWOKEY_REDIS_PASSWORD": w.env("TWOKEY_REDIS_PASSWORD"),
	})
	if err := w.slack.WaitConnected(before+1, 30*time.Second); err != nil {
		w.t.Fatalf("serve did not connect: %v\n%s", err, w.logs.String())
	}
	return p
}

// startRunner starts a worker of pool, on a config with its own data dir.
func (w *poolWorld) startRunner(pool, name string, flags ...string) *botProcess {
	w.t.Helper()
	w.workers++
	cfg := w.serveCfg()
	cfg.DataDir = filepath.Join(w.dir, "data-"+name)
	cfg.Signing.KeyFile = filepath.Join(w.keys, "runner-"+pool+".key")
	cfg.Redis = w.redisConfig("twokey-runner-" + pool)
	path := w.write(name+".yaml", cfg)
	return w.startProcess(append([]string{"runner", "--config", path, "--pool", pool, "--name", name}, flags...), w.runnerEnv[pool])
}

// poolPlanKey is a pool's own plan key (TWOKEY_PLAN_KEY_<POOL>).
func poolPlanKey(pool string) string {
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%-32s", "plan key of pool "+pool)))
}

// executor names the worker that claimed a plan's apply.
func (w *poolWorld) executor(pool, planID string) string {
	return w.rdb.Get(context.Background(), keyPrefix+"claim:"+pool+":{"+planID+"}:"+w.plan(planID).PermitTag()).Val()
}

// plan reads a plan from the store.
func (w *poolWorld) plan(id string) approvals.Plan {
	w.t.Helper()
	p, err := redisstore.New(w.rdb, keyPrefix, 0).Get(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// Each pool's worker applies only its own environments, with its own Vault
// login; serve holds none; a prod job put on the nonprod stream is refused.
func TestRunnerPools(t *testing.T) {
	w := newPoolWorld(t)
	// Each apply records the policies of the token it was given.
	lookup := filepath.Join(w.out, "token.json")
	w.provision = fmt.Sprintf(" && %s token lookup -format=json > %s", stacktest.Tool(t, "vault"), lookup)
	w.openPR(1, "web")
	serve := w.startServe()
	w.startRunner("nonprod", "np-1")
	w.startRunner("prod", "prod-1")
	policies := func() string {
		b, err := os.ReadFile(lookup)
		if err != nil {
			t.Fatalf("no token lookup from the apply: %v", err)
		}
		var out struct {
			Data struct {
				Policies []string `json:"policies"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out.Data.Policies, ",")
	}

	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", serve.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(environ), "VAULT") {
		t.Fatal("serve has Vault credentials in its environment")
	}

	w.slash(alice, "plan staging pr-1")
	staging := w.planMessage(1, "Plan ready for review")
	stagingID := staging.Buttons()[0].Value
	w.click(bob, staging, approve)
	w.click(carol, staging, approve)
	w.waitTS(staging.TS, "Applied")
	if ex := w.executor("nonprod", stagingID); ex != "np-1" {
		t.Fatalf("staging applied by %q, want the nonprod worker", ex)
	}
	if got := policies(); got != "staging-apply" {
		t.Fatalf("staging apply token policies = %q", got)
	}

	w.slash(alice, "plan prod pr-1")
	prod := w.visible("prod · PR #1")
	prod = w.waitTS(prod.TS, "Plan ready for review")
	planID := prod.Buttons()[0].Value
	w.click(bob, prod, approve)
	w.click(carol, prod, approve)
	w.waitTS(prod.TS, "Applied")
	if ex := w.executor("prod", planID); ex != "prod-1" {
		t.Fatalf("prod applied by %q, want the prod worker", ex)
	}
	if got := policies(); got != "prod-apply" {
		t.Fatalf("prod apply token policies = %q, want the prod role's", got)
	}

	// The nonprod login cannot mint a prod token at all.
	np := vaultLogin(t, w.vault.Addr, w.runnerEnv["nonprod"]["VAULT_NONPROD_ROLE_ID"], w.runnerEnv["nonprod"]["VAULT_NONPROD_SECRET_ID"])
	if _, err := np.Auth().Token().CreateWithRole(&vault.TokenCreateRequest{TTL: "1m"}, "twokey-prod-apply"); err == nil {
		t.Fatal("the nonprod runner's login can mint prod tokens")
	}
	if _, err := np.Auth().Token().CreateWithRole(&vault.TokenCreateRequest{TTL: "1m"}, "twokey-staging-apply"); err != nil {
		t.Fatalf("the nonprod runner's login cannot mint staging tokens: %v", err)
	}

	var picks []string
	for _, line := range strings.Split(w.logs.String(), "\n") {
		if i := strings.Index(line, "latency="); strings.Contains(line, `msg="job picked"`) && i >= 0 {
			picks = append(picks, strings.Fields(line[i+len("latency="):])[0])
		}
	}
	t.Logf("dispatch → worker pick-up, across processes: %s", strings.Join(picks, ", "))

	// A prod job on the nonprod stream — signed by serve, as if misrouted —
	// is refused by the nonprod worker.
	signer, err := attest.LoadSigner(filepath.Join(w.keys, "serve.key"))
	if err != nil {
		t.Fatal(err)
	}
	entry, err := redisjobs.SignedEntry(signer, redisjobs.Job{ID: "forged:plan:1", Kind: redisjobs.KindPlan, PlanID: "p-forged12",
		Project: "infra", Env: "prod", Pool: "nonprod", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: keyPrefix + "jobs:{nonprod}", Values: entry}).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		raw, err := w.rdb.Get(context.Background(), keyPrefix+"jobresult:nonprod:{p-forged12}:plan").Result()
		if err == nil {
			if !strings.Contains(raw, "wrong_pool") || !strings.Contains(raw, `"worker":"np-1"`) {
				t.Fatalf("forged job outcome: %s", raw)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forged prod job was not refused")
		}
	}

	// Each worker recorded, as serve does, the config it runs with.
	loaded := map[string]string{}
	for _, e := range w.events() {
		if e.Type == audit.ConfigLoaded && e.Detail["config_sha256"] != "" {
			loaded[e.Actor.Name] = e.Detail["pool"]
		}
	}
	if loaded["np-1"] != "nonprod" || loaded["prod-1"] != "prod" {
		t.Fatalf("config_loaded by worker (name → pool): %v", loaded)
	}
}

// Two serve replicas share one Slack app: clicks land on different
// replicas, and the flow completes.
func TestTwoServeReplicas(t *testing.T) {
	w := newPoolWorld(t)
	w.openPR(1, "web")
	w.startServe()
	w.startServe()
	w.startRunner("nonprod", "np-1")

	w.slash(alice, "plan staging pr-1")
	msg := w.planMessage(1, "Plan ready for review")
	first, err := w.slack.Click(bob, channel, msg.TS, approve)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.slack.WaitAcked(first, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.waitTS(msg.TS, "1 more needed")
	second, err := w.slack.Click(carol, channel, msg.TS, approve)
	if err != nil {
		t.Fatal(err)
	}
	w.waitTS(msg.TS, "Applied")
	a, b := w.slack.DeliveredTo(first), w.slack.DeliveredTo(second)
	if len(a) != 1 || len(b) != 1 || a[0] == b[0] {
		t.Fatalf("clicks delivered to connections %v and %v, want two different replicas", a, b)
	}
}

// A worker killed mid-plan: another worker of the pool takes the job over
// and the plan completes. A worker killed mid-apply: the apply is never
// re-run; the plan is marked interrupted.
func TestRunnerKilled(t *testing.T) {
	w := newPoolWorld(t)
	many := make([]string, 3000)
	for i := range many {
		many[i] = fmt.Sprintf("r%d", i)
	}
	var big strings.Builder
	big.WriteString("terraform {\n  backend \"local\" {}\n}\n")
	for _, r := range many {
		fmt.Fprintf(&big, "resource \"terraform_data\" %q {\n  input = %q\n}\n", r, r)
	}
	w.openPRWith(1, big.String())
	w.provision = " && sleep 20"
	w.openPR(2, "slow")
	w.startServe()
	runners := map[string]*botProcess{"np-1": w.startRunner("nonprod", "np-1"), "np-2": w.startRunner("nonprod", "np-2")}
	// Both take jobs before one is killed: a worker still starting up (on a
	// loaded machine that took half a minute) would take the job over late.
	w.takingJobs("nonprod", "np-1", "np-2")

	// Mid-plan: kill the worker holding the job as soon as it has it.
	w.slash(alice, "plan staging pr-1")
	holder := w.pendingConsumer("nonprod")
	runners[holder].kill()
	killed := time.Now()
	msg := w.planMessage(1, "Plan ready for review")
	t.Logf("plan taken over and finished %v after its worker %s was killed", time.Since(killed).Round(time.Millisecond), holder)
	w.click(alice, msg, reject)
	w.waitTS(msg.TS, "Rejected")
	delete(runners, holder)
	runners[holder+"b"] = w.startRunner("nonprod", holder+"b")
	w.takingJobs("nonprod", holder+"b")

	// Mid-apply: kill the worker that claimed the apply once terraform runs.
	w.slash(alice, "plan staging pr-2")
	msg = w.planMessage(2, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	w.click(bob, msg, approve)
	w.click(carol, msg, approve)
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(w.envDump()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("apply never started")
		}
	}
	executor := w.executor("nonprod", planID)
	held := w.pending("nonprod")
	if len(held) != 1 || held[0].Consumer != executor {
		t.Fatalf("jobs pending in nonprod: %+v, want the apply held by %s", held, executor)
	}
	if p, ok := runners[executor]; ok {
		p.kill()
	} else {
		t.Fatalf("apply claimed by %q, not a known worker", executor)
	}
	if err := os.Remove(w.envDump()); err != nil {
		t.Fatal(err)
	}
	done := w.waitTS(msg.TS, "Interrupted")
	if !strings.Contains(done.Content(), "never run twice") && !strings.Contains(done.Content(), "will not be retried") {
		t.Fatalf("interrupted message:\n%s", done.Content())
	}
	// Past the visibility timeout a live worker takes the dead one's job
	// over, and acknowledges it only once it has handled it: when the job
	// has left the pending list, the takeover had its chance and no worker
	// can take it again.
	for deadline := time.Now().Add(waitFor); len(w.pending("nonprod")) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dead worker's apply job is still pending after %v: %+v\nlogs:\n%s", waitFor, w.pending("nonprod"), w.logs.String())
		}
	}
	if _, err := os.Stat(w.envDump()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the apply ran again after its worker died (its environment was written: %v)", err)
	}
}

// takingJobs waits until each named worker of pool has said it is taking
// jobs, which it says as it starts to.
func (w *poolWorld) takingJobs(pool string, names ...string) {
	w.t.Helper()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		logs := w.logs.String()
		if !slices.ContainsFunc(names, func(n string) bool {
			return !regexp.MustCompile(`msg="runner taking jobs" pool=` + pool + ` worker=` + n + `\b`).MatchString(logs)
		}) {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("workers %v of pool %s not taking jobs after %v:\n%s", names, pool, waitFor, logs)
		}
	}
}

// pending lists the jobs of pool that a worker has taken and not yet
// acknowledged.
func (w *poolWorld) pending(pool string) []redis.XPendingExt {
	w.t.Helper()
	pending, err := w.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
		Stream: keyPrefix + "jobs:{" + pool + "}", Group: "runners", Start: "-", End: "+", Count: 100}).Result()
	if err != nil {
		w.t.Fatal(err)
	}
	return pending
}

// pendingConsumer waits until a worker of pool holds a job and names it.
func (w *poolWorld) pendingConsumer(pool string) string {
	w.t.Helper()
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		pending, err := w.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{
			Stream: keyPrefix + "jobs:{" + pool + "}", Group: "runners", Start: "-", End: "+", Count: 1}).Result()
		if err == nil && len(pending) > 0 {
			return pending[0].Consumer
		}
	}
	w.t.Fatal("no worker took the job")
	return ""
}

func vaultLogin(t *testing.T, addr, roleID, secretID string) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	sec, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(sec.Auth.ClientToken)
	return c
}

// A verification still running on a pool when its serve stops (a deploy)
// is reported all the same: by the next serve's sweeper, from the result
// the worker kept, once.
func TestVerificationOutlivesItsServe(t *testing.T) {
	w := newPoolWorld(t)
	w.editServeConfig(func(cfg *config.Config) {
		cfg.Projects[0].Environments[0].Verify = &config.Verify{Converged: true, Smoke: "./scripts/smoke.sh"}
	})
	w.openPRFiles(1, map[string]string{"terraform/main.tf": stableTF, "scripts/smoke.sh": "#!/bin/sh\necho smoke: up\nsleep 3\necho smoke: ok\n"})
	first := w.startServe("--shutdown-grace", "1s")
	w.startRunner("nonprod", "np-1")
	w.takingJobs("nonprod", "np-1")

	msg := w.applyPR(1)
	w.thread(msg, "Verifying")
	first.stop(t) // with the verification under way on np-1
	if strings.Contains(w.logs.String(), "msg=verified") {
		t.Fatalf("the first serve waited for the verification:\n%s", w.logs.String())
	}
	w.startServe()
	w.thread(msg, "Verification passed")
	w.planMessage(1, "verified")
	time.Sleep(time.Second) // more sweeps
	if ev := w.verifications(); len(ev) != 1 || ev[0].Detail["result"] != "passed" || ev[0].Detail["smoke"] != "passed" {
		t.Fatalf("verification events: %+v", ev)
	}
}
