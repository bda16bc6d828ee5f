package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/redislock"
	"github.com/twokey/twokey/runner/redisplans"
)

// dirSource checks out files from memory, one tree per SHA.
type dirSource struct{ trees map[string]map[string]string }

func (s *dirSource) Resolve(context.Context, string, runner.Ref) (runner.Revision, error) {
	return runner.Revision{}, errors.New("not used")
}

func (s *dirSource) Checkout(_ context.Context, rev runner.Revision, dst string) error {
	tree, ok := s.trees[rev.SHA]
	if !ok {
		return fmt.Errorf("%w: no commit %s", runner.ErrSource, rev.SHA)
	}
	for name, content := range tree {
		p := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o600)
		if strings.HasPrefix(content, "\x7fELF") || strings.HasPrefix(content, "#!") {
			mode = 0o700 // programs are checked out executable
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return err
		}
	}
	return nil
}

// fakeCreds mints credentials from memory and records what happened.
type fakeCreds struct {
	mu         sync.Mutex
	fail       error
	revokeFail error
	minted     []runner.CredentialRequest
	revoked    []string
	n          int
	// values, if set, are what the secrets' fields hold (default
	// "value-of-<field>").
	values map[string]string
}

func (c *fakeCreds) Mint(_ context.Context, req runner.CredentialRequest) (*runner.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, fmt.Errorf("%w: %w", runner.ErrCredentials, c.fail)
	}
	c.n++
	c.minted = append(c.minted, req)
	env := map[string]string{"VAULT_TOKEN": fmt.Sprintf("hvs.child-token-%d-abcdefghijklmnopqrstuvwxyz", c.n)}
	for _, s := range req.Secrets {
		for k, field := range s.Env {
			env[k] = "value-of-" + field
			if v, ok := c.values[field]; ok {
				env[k] = v
			}
		}
	}
	return runner.NewCredential(fmt.Sprintf("accessor-%d", c.n), time.Now().Add(req.TTL), env), nil
}

func (c *fakeCreds) Revoke(_ context.Context, cred *runner.Credential) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revokeFail != nil {
		return c.revokeFail
	}
	c.revoked = append(c.revoked, cred.Accessor)
	return nil
}

type fixture struct {
	r      *runner.Runner
	opts   runner.Options // what r was made with
	locks  *redislock.Locks
	rdb    *redis.Client
	creds  *fakeCreds
	src    *dirSource
	plans  *redisplans.Store
	target runner.Target
	root   string // test scratch, holding data/ and dir
	dir    string // what runs may write: state, env dump
}

// runner makes another runner like f's, changed by mod, in its own data
// directory.
func (f fixture) runner(t testing.TB, mod func(*runner.Options)) (*runner.Runner, error) {
	t.Helper()
	o := f.opts
	o.DataDir = filepath.Join(f.root, fmt.Sprintf("data-%d", time.Now().UnixNano()))
	mod(&o)
	return runner.New(context.Background(), o)
}

const sha1 = "1111111111111111111111111111111111111111"

// mainTF is a config of built-in resources only. Its provisioner records the
// environment terraform ran with.
func mainTF(dir string, extra string) string {
	return fmt.Sprintf(`
terraform {
  backend "local" {}
}
resource "terraform_data" "a" {
  input = "hello"
  provisioner "local-exec" {
    command = "env > %s/env.txt%s"
  }
}
`, dir, extra)
}

func setup(t testing.TB, lockTTL time.Duration) fixture {
	t.Helper()
	root := stacktest.Dir(t)
	dir := stacktest.Writable(t, root, "out")
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	plans, err := redisplans.New(rdb, "t:", make([]byte, redisplans.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{
		locks: redislock.New(rdb, "t:"),
		rdb:   rdb,
		plans: plans,
		root:  root,
		creds: &fakeCreds{},
		src:   &dirSource{trees: map[string]map[string]string{sha1: {"infra/main.tf": mainTF(dir, "")}}},
		dir:   dir,
		target: runner.Target{
			Project: "acme", Env: "staging", Dir: "infra",
			BackendConfig: map[string]string{"path": filepath.Join(dir, "terraform.tfstate")},
			ApplyCreds: runner.CredentialRequest{Role: "twokey-staging-apply", TTL: time.Minute, NumUses: 2,
				Secrets: []runner.SecretRef{{Path: "secret/data/staging/deploy", Env: map[string]string{"DB_PASSWORD": "password"}}}},
			LockTTL: lockTTL, PlanTimeout: time.Minute, ApplyTimeout: time.Minute,
		},
	}
	f.opts = runner.Options{
		Locks: f.locks, Source: f.src, Creds: f.creds, Plans: plans, Sandbox: stacktest.Sandbox(t, dir),
		Binary: stacktest.Tool(t, "terraform"), Version: "1.12.2", DataDir: filepath.Join(root, "data"),
		VaultAddr: "http://vault.test:8200",
	}
	f.r, err = runner.New(context.Background(), f.opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// lease takes the environment's lock for a plan.
func (f fixture) lease(t testing.TB) runner.Lease {
	t.Helper()
	lease, err := f.locks.Acquire(context.Background(), runner.LockKey("acme", "staging"), runner.Holder{User: "UREQ", PR: 42}, f.target.LockTTL)
	if err != nil {
		t.Fatal(err)
	}
	return lease
}

// lootBinary is where a pull request ships the loot provider.
const lootBinary = "infra/terraform.d/plugins/example.com/twokey/loot/1.0.0/linux_amd64/terraform-provider-loot_v1.0.0"

// lootPR is a pull request's tree whose main.tf runs program (a Terraform
// expression) at plan time, through the loot provider it ships, and then
// has rest.
func lootPR(t testing.TB, program, rest string) map[string]string {
	return map[string]string{
		"infra/main.tf": `terraform {
  backend "local" {}
  required_providers {
    loot = { source = "example.com/twokey/loot", version = "1.0.0" }
  }
}
data "loot_run" "x" {
  program = ` + program + `
}
` + rest,
		lootBinary: string(stacktest.LootProvider(t)),
	}
}

// plan takes the lock and plans sha.
func (f fixture) plan(t testing.TB, id, sha string) (runner.Lease, runner.PlanResult) {
	t.Helper()
	ctx := context.Background()
	lease := f.lease(t)
	var previews []approvals.Summary
	res, err := f.r.Plan(ctx, runner.PlanJob{PlanID: id, Rev: f.rev(sha), Lease: lease, Target: f.target,
		Preview: func(s approvals.Summary) { previews = append(previews, s) }})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	// The preview shown while the saved plan is read back says what the
	// saved plan says, and comes only for a plan with changes.
	switch {
	case !res.Summary.Changes && len(previews) > 0:
		t.Errorf("a plan without changes was previewed: %+v", previews)
	case res.Summary.Changes && len(previews) != 1:
		t.Errorf("%d previews of a plan with changes", len(previews))
	case res.Summary.Changes && !reflect.DeepEqual(previews[0], res.Summary):
		t.Errorf("preview %+v\nsaved plan %+v", previews[0], res.Summary)
	}
	return lease, res
}

func (f fixture) rev(sha string) runner.Revision {
	return runner.Revision{Repo: "acme/infra", PR: 42, SHA: sha}
}

// grant walks a plan through two approvals, as the bot does.
func grant(t *testing.T, id string, lease runner.Lease, sha string, res runner.PlanResult) approvals.Permit {
	t.Helper()
	now := time.Now()
	p, err := approvals.New(approvals.Request{ID: id, Project: "acme", Env: "staging", PR: 42, SHA: sha,
		Requester: "UREQ", Fence: lease.Fence, LockOwner: lease.Owner, Required: 2, Protected: true, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	p, _ = approvals.Planned(p, res.Digest, res.Summary, approvals.Assessment{}, time.Hour, now)
	signer, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	n := approvals.NewNotary(signer, attest.Keyring{})
	if p, err = n.Seal(p); err != nil {
		t.Fatal(err)
	}
	p, _, _ = n.Approve(p, "UA", true, now)
	p, _, _ = n.Approve(p, "UB", true, now)
	_, g, err := n.BeginApply(p, now)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// terraform runs with GOGC=200 unless terraform.env sets it.
func TestTerraformEnvSetsGOGC(t *testing.T) {
	f := setup(t, 30*time.Second)
	f.target.TerraformEnv = map[string]string{"GOGC": "50"}
	lease, res := f.plan(t, "p1", sha1)
	if _, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	env, err := os.ReadFile(filepath.Join(f.dir, "env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(env), "\n"), "GOGC=50") {
		t.Fatalf("terraform environment has no GOGC=50:\n%s", env)
	}
}

// startLog is a Sandbox whose boxes log which of their executables (or
// gates) each terraform command was started through, before starting it.
type startLog struct {
	runner.Sandbox
	log string // a file: one "exec|background <command>" line per start
}

type loggedBox struct {
	runner.Box
	exec, background, log string
}

func (s startLog) Open(run runner.Run) (runner.Box, error) {
	box, err := s.Sandbox.Open(run)
	if err != nil {
		return nil, err
	}
	b := loggedBox{Box: box, exec: run.Dir + ".exec", background: run.Dir + ".background", log: s.log}
	for path, exe := range map[string]string{b.exec: box.Exec(), b.background: box.Background()} {
		if err := logStarts(path, "", exe, s.log); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// logStarts writes a script at path that logs its kind (the path's
// extension) and first argument, and starts exe.
func logStarts(path, kind, exe, log string) error {
	if kind == "" {
		kind = strings.TrimPrefix(filepath.Ext(path), ".")
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"%s $1\" >> '%s'\nexec '%s' \"$@\"\n", kind, log, exe)
	// Started at once: no child forked meanwhile may hold it open.
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	return os.WriteFile(path, []byte(script), 0o700)
}

type loggedGate struct {
	runner.Gate
	exec string
}

func (g loggedGate) Exec() string { return g.exec }

func (b loggedBox) Gate(dir string) (runner.Gate, error) {
	g, err := b.Box.(runner.Gater).Gate(dir)
	if err != nil {
		return nil, err
	}
	path := strings.TrimSuffix(b.exec, ".exec") + "." + filepath.Base(g.Exec())
	return loggedGate{Gate: g, exec: path}, logStarts(path, "gate", g.Exec(), b.log)
}

func (b loggedBox) Exec() string       { return b.exec }
func (b loggedBox) Background() string { return b.background }
func (b loggedBox) Close() error {
	gates, _ := filepath.Glob(strings.TrimSuffix(b.exec, ".exec") + ".gate*")
	for _, g := range gates {
		_ = os.Remove(g)
	}
	return errors.Join(b.Box.Close(), os.Remove(b.exec), os.Remove(b.background))
}

// Once a plan's changes are shown, its read-back (the two shows of the
// saved plan) runs behind other runs' terraform; everything else, and the
// read-back of a plan without changes (whose result people wait for),
// does not.
func TestReadBackRunsBehind(t *testing.T) {
	f := setup(t, 30*time.Second)
	const noChanges = "2222222222222222222222222222222222222222"
	f.src.trees[noChanges] = map[string]string{"infra/main.tf": "terraform {\n  backend \"local\" {}\n}\n"}
	log := filepath.Join(f.root, "starts.log")
	r, err := f.runner(t, func(o *runner.Options) { o.Sandbox = startLog{Sandbox: o.Sandbox, log: log} })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	for _, c := range []struct {
		sha  string
		want []string
	}{
		{sha1, []string{"background show", "background show", "gate init", "gate plan"}},
		{noChanges, []string{"exec show", "exec show", "gate init", "gate plan"}},
	} {
		if err := os.WriteFile(log, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		lease, _ := f.plan(t, "p-"+c.sha[:1], c.sha)
		if err := f.locks.Release(context.Background(), lease); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		// terraform-exec may ask a new executable its version first.
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if !strings.HasSuffix(l, " version") {
				got = append(got, l)
			}
		}
		// Gated commands start at once, in either order.
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("plan of %s started %q, want %q", c.sha[:7], got, c.want)
		}
	}
}

// A plan's read-back waits while another plan of the runner has not
// shown its changes yet: here, until the other plan's preview returns.
func TestReadBackWaitsForAnotherPlansPreview(t *testing.T) {
	f := setup(t, 30*time.Second)
	log := filepath.Join(f.root, "starts.log")
	r, err := f.runner(t, func(o *runner.Options) { o.Sandbox = startLog{Sandbox: o.Sandbox, log: log} })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	other := f.target
	other.Env, other.BackendConfig = "other", map[string]string{"path": filepath.Join(f.dir, "other.tfstate")}
	otherLease, err := f.locks.Acquire(ctx, runner.LockKey("acme", "other"), runner.Holder{User: "UREQ", PR: 42}, other.LockTTL)
	if err != nil {
		t.Fatal(err)
	}
	showing, shown := make(chan struct{}), make(chan struct{})
	otherDone := make(chan error, 1)
	go func() {
		_, err := r.Plan(ctx, runner.PlanJob{PlanID: "p-other", Rev: f.rev(sha1), Lease: otherLease, Target: other,
			Preview: func(approvals.Summary) { close(showing); <-shown }})
		otherDone <- err
	}()
	<-showing // the other plan is showing its changes, and has not yet
	previewed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Plan(ctx, runner.PlanJob{PlanID: "p-1", Rev: f.rev(sha1), Lease: f.lease(t), Target: f.target,
			Preview: func(approvals.Summary) { close(previewed) }})
		done <- err
	}()
	<-previewed
	time.Sleep(300 * time.Millisecond)
	if b, _ := os.ReadFile(log); strings.Contains(string(b), "background show") {
		t.Fatalf("a read-back started while another plan was still showing its changes:\n%s", b)
	}
	close(shown)
	for _, c := range []chan error{done, otherDone} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(log); strings.Count(string(b), "background show") != 4 {
		t.Errorf("read-backs started:\n%s", b)
	}
}

func TestPlanThenApply(t *testing.T) {
	f := setup(t, 30*time.Second)
	t.Setenv("TWOKEY_BOT_ONLY_SECRET", "bot-secret-must-not-leak")
	lease, res := f.plan(t, "p1", sha1)
	if len(res.Digest) != 64 {
		t.Fatalf("digest %q", res.Digest)
	}
	want := []approvals.Resource{{Address: "terraform_data.a", Action: approvals.ActionCreate}}
	if res.Summary.Add != 1 || res.Summary.Destroy != 0 || fmt.Sprint(res.Summary.Resources) != fmt.Sprint(want) {
		t.Fatalf("summary = %+v", res.Summary)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "env.txt")); !os.IsNotExist(err) {
		t.Fatal("plan ran the provisioner")
	}

	var lines []string
	out, err := f.r.Apply(context.Background(), runner.ApplyJob{
		Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target,
		Progress: func(l string) { lines = append(lines, l) },
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if out.Summary != "1 added, 0 changed, 0 destroyed" || out.Accessor != "accessor-1" {
		t.Fatalf("result = %+v", out)
	}
	if len(lines) == 0 || !strings.Contains(lines[0], "terraform_data.a") {
		t.Fatalf("progress = %q", lines)
	}
	env, err := os.ReadFile(filepath.Join(f.dir, "env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DB_PASSWORD=value-of-password", "VAULT_TOKEN=hvs.child-token-1-", "VAULT_ADDR=http://vault.test:8200", "TF_IN_AUTOMATION=1", "GOGC=200"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("terraform environment lacks %s", want)
		}
	}
	if strings.Contains(string(env), "bot-secret-must-not-leak") || strings.Contains(string(env), "TWOKEY_BOT_ONLY_SECRET") {
		t.Error("terraform saw the bot's own environment")
	}
	if len(f.creds.revoked) != 1 || f.creds.revoked[0] != "accessor-1" {
		t.Fatalf("revoked = %v", f.creds.revoked)
	}
	state, err := os.ReadFile(filepath.Join(f.dir, "terraform.tfstate"))
	if err != nil || !strings.Contains(string(state), `"terraform_data"`) {
		t.Fatalf("state lacks the resource: %v", err)
	}
}

func TestApplyRefusesAChangedPlanFile(t *testing.T) {
	f := setup(t, 30*time.Second)
	lease, res := f.plan(t, "p1", sha1)
	g := grant(t, "p1", lease, sha1, res)
	if err := f.plans.Save(context.Background(), "p1", []byte("tampered"), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: g, Rev: f.rev(sha1), Target: f.target})
	if !errors.Is(err, runner.ErrStalePlan) {
		t.Fatalf("err = %v, want ErrStalePlan", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "env.txt")); !os.IsNotExist(err) {
		t.Fatal("terraform applied a tampered plan")
	}
	if len(f.creds.revoked) != len(f.creds.minted) {
		t.Fatalf("minted %d, revoked %d", len(f.creds.minted), len(f.creds.revoked))
	}
}

func TestApplyWithoutCredentialsDoesNothing(t *testing.T) {
	f := setup(t, 30*time.Second)
	lease, res := f.plan(t, "p1", sha1)
	f.creds.fail = errors.New("connection refused")
	_, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target})
	if !errors.Is(err, runner.ErrCredentials) {
		t.Fatalf("err = %v, want ErrCredentials", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "env.txt")); !os.IsNotExist(err) {
		t.Fatal("applied without credentials")
	}
	// The saved plan is still there for a retry.
	if _, err := f.plans.Load(context.Background(), "p1"); err != nil {
		t.Fatal(err)
	}
}

// Every run has a directory of its own, removed after it: nothing a plan
// wrote is there when its apply (or any later run) starts.
func TestRunsLeaveNothingBehind(t *testing.T) {
	f := setup(t, 30*time.Second)
	leftovers := func() []string {
		// <data>/runs/<this runner>/: nothing but binaries staged for runs
		// that drop from root.
		entries, err := filepath.Glob(filepath.Join(f.root, "data", "runs", "*", "*"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if filepath.Base(e) != ".bin" {
				names = append(names, e)
			}
		}
		return names
	}
	lease, res := f.plan(t, "p1", sha1)
	if l := leftovers(); len(l) != 0 {
		t.Fatalf("the plan left %v", l)
	}
	if _, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if l := leftovers(); len(l) != 0 {
		t.Fatalf("the apply left %v", l)
	}

	// A runner that died mid-run left its directory; the next one to start
	// removes it, and leaves a live runner's alone.
	dead := filepath.Join(f.root, "data", "runs", "deadbeef0000")
	if err := os.MkdirAll(filepath.Join(dead, "plan.acme.staging", "src"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dead+".lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runner.New(context.Background(), f.opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("a dead runner's runs are still there: %v", err)
	}
	if live, _ := filepath.Glob(filepath.Join(f.root, "data", "runs", "*.lock")); len(live) != 2 {
		t.Fatalf("runner locks: %v; want this test's two live runners", live)
	}
}

func TestLostLeaseInterruptsApply(t *testing.T) {
	f := setup(t, 600*time.Millisecond)
	f.src.trees[sha1]["infra/main.tf"] = mainTF(f.dir, " && sleep 20")
	lease, res := f.plan(t, "p1", sha1)
	g := grant(t, "p1", lease, sha1, res)
	go func() {
		// Someone else takes the environment while the apply runs.
		for {
			if _, err := os.Stat(filepath.Join(f.dir, "env.txt")); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.rdb.Set(context.Background(), "t:lock:{acme/staging}", "thief", time.Minute)
	}()
	start := time.Now()
	_, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: g, Rev: f.rev(sha1), Target: f.target})
	if !errors.Is(err, runner.ErrInterrupted) || !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("err = %v, want ErrInterrupted and ErrLockLost", err)
	}
	t.Logf("apply interrupted %v after start", time.Since(start).Round(time.Millisecond))
	if len(f.creds.revoked) != 1 {
		t.Fatal("credential not revoked after the interrupt")
	}
}

func TestPlanErrorIsRedacted(t *testing.T) {
	f := setup(t, 30*time.Second)
	f.src.trees[sha1]["infra/main.tf"] = `resource "terraform_data" "a" { input = var.missing }`
	f.target.PlanCreds = &runner.CredentialRequest{Role: "twokey-staging-plan", TTL: time.Minute, NumUses: 1}
	lease, err := f.locks.Acquire(context.Background(), "acme/staging", runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.r.Plan(context.Background(), runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	var te *runner.TerraformError
	if !errors.As(err, &te) || te.Step != "plan" || !strings.Contains(te.Output, "missing") {
		t.Fatalf("err = %#v", err)
	}
	if len(f.creds.revoked) != 1 {
		t.Fatal("plan credential not revoked")
	}
}

func TestRefusesWrongBinaryVersion(t *testing.T) {
	f := setup(t, time.Minute)
	_, err := f.runner(t, func(o *runner.Options) { o.Version = "1.9.8" })
	if !errors.Is(err, runner.ErrBinary) || !strings.Contains(err.Error(), "1.12.2") {
		t.Fatalf("err = %v", err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"password is hunter22 ok", "password is [redacted] ok"},
		{"token hvs.CAESIJ1abcdefghijklmnopqrstuvwxyz leaked", "token [redacted] leaked"},
		{"slack xoxb-1234-5678-abcdefghij", "slack [redacted]"},
		{"github ghp_abcdefghijklmnopqrstuvwx", "github [redacted]"},
		{"no secrets here", "no secrets here"},
		{"short 1 stays", "short 1 stays"},
	}
	for _, tt := range tests {
		if got := runner.Redact(tt.in, "hunter22", "1"); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOpenTofu(t *testing.T) {
	f := setup(t, 30*time.Second)
	r, err := f.runner(t, func(o *runner.Options) { o.Binary, o.Version = stacktest.Tool(t, "tofu"), "1.12.6" })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	lease, res := f.plan(t, "p1", sha1)
	if _, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatalf("apply with tofu: %v", err)
	}
	if env, err := os.ReadFile(filepath.Join(f.dir, "env.txt")); err != nil || !strings.Contains(string(env), "DB_PASSWORD=value-of-password") {
		t.Fatalf("tofu apply did not run the provisioner with the credential: %v", err)
	}
}

func TestRevokeFailureIsReported(t *testing.T) {
	f := setup(t, 30*time.Second)
	lease, res := f.plan(t, "p1", sha1)
	f.creds.revokeFail = errors.New("vault sealed")
	out, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target})
	if err != nil {
		t.Fatal(err)
	}
	if out.RevokeErr == nil || out.Accessor == "" || out.Expires.IsZero() {
		t.Fatalf("revoke failure not reported: %+v", out)
	}
}

// BenchmarkPlan measures a whole runner plan of a one-resource config: lease,
// fresh checkout, init, plan -out, show -json, digest. Compare with
// BenchmarkRawInitPlan, the same terraform work run by hand.
func BenchmarkPlan(b *testing.B) {
	f := setup(b, time.Minute)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		lease, err := f.locks.Acquire(ctx, "acme/staging", runner.Holder{}, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.r.Plan(ctx, runner.PlanJob{PlanID: fmt.Sprintf("p%d", i), Rev: f.rev(sha1), Lease: lease, Target: f.target}); err != nil {
			b.Fatal(err)
		}
		if err := f.locks.Release(ctx, lease); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawInitPlan is the floor: terraform init && terraform plan -out
// in a fresh directory, with nothing around them.
func BenchmarkRawInitPlan(b *testing.B) {
	bin := stacktest.Tool(b, "terraform")
	dir := b.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	for i := 0; b.Loop(); i++ {
		work := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(work, 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(mainTF(dir, "")), 0o600); err != nil {
			b.Fatal(err)
		}
		for _, args := range [][]string{
			{"init", "-input=false", "-backend-config=path=" + filepath.Join(dir, "state")},
			{"plan", "-input=false", "-out=" + filepath.Join(work, "plan")},
		} {
			cmd := exec.Command(bin, args...)
			cmd.Dir, cmd.Env = work, env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	}
}

// Two plans made from the same state: once one is applied, terraform
// refuses the other ("Saved plan is stale"), and the runner says so plainly.
func TestSavedPlanIsStale(t *testing.T) {
	f := setup(t, 30*time.Second)
	lease, res1 := f.plan(t, "p1", sha1)
	res2, err := f.r.Plan(context.Background(), runner.PlanJob{PlanID: "p2", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res1), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatal(err)
	}
	_, err = f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p2", lease, sha1, res2), Rev: f.rev(sha1), Target: f.target})
	var te *runner.TerraformError
	if !errors.Is(err, runner.ErrStalePlan) || !errors.As(err, &te) || !strings.Contains(te.Output, "Saved plan is stale") {
		t.Fatalf("err = %v, want ErrStalePlan with terraform's words", err)
	}
	recs, err := f.locks.Ledger(context.Background(), "acme/staging", 10)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range recs {
		var rec runner.LedgerRecord
		if err := json.Unmarshal(r, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Fence != lease.Fence {
			t.Errorf("record with fence %d, want %d", rec.Fence, lease.Fence)
		}
		kinds = append(kinds, rec.Kind+":"+rec.PlanID+":"+rec.Result)
	}
	want := []string{"apply_start:p1:", "apply_end:p1:applied", "apply_start:p2:", "apply_end:p2:failed"}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("ledger = %v, want %v", kinds, want)
	}
}

// A lease lost before the apply starts stops it at the fenced gate.
func TestApplyAfterLostLeaseNeverStarts(t *testing.T) {
	f := setup(t, 30*time.Second)
	lease, res := f.plan(t, "p1", sha1)
	g := grant(t, "p1", lease, sha1, res)
	if _, _, err := f.locks.ForceRelease(context.Background(), "acme/staging"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.locks.Acquire(context.Background(), "acme/staging", runner.Holder{User: "UOTHER"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: g, Rev: f.rev(sha1), Target: f.target})
	if !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("err = %v, want ErrLockLost", err)
	}
	if len(f.creds.minted) != 0 {
		t.Fatal("credentials minted without the lock")
	}
}

// recorder collects audit events; it fails on the types in failOn.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
	failOn map[string]bool
}

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failOn[e.Type] {
		return errors.New("audit stream unwritable")
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Type)
	}
	return out
}

// An apply is recorded before it starts and before its credential is used;
// when either record cannot be written, nothing is applied.
func TestApplyNeedsItsAuditRecords(t *testing.T) {
	for _, failOn := range []string{"", audit.ApplyStarted, audit.CredentialRequested, audit.CredentialMinted} {
		t.Run("fail "+failOn, func(t *testing.T) {
			f := setup(t, 30*time.Second)
			rec := &recorder{failOn: map[string]bool{failOn: true}}
			r, err := f.runner(t, func(o *runner.Options) { o.Audit, o.Name = rec, "test" })
			if err != nil {
				t.Fatal(err)
			}
			f.r = r
			lease, res := f.plan(t, "p1", sha1)
			if !strings.Contains(res.Text, "terraform_data.a will be created") {
				t.Fatalf("plan text:\n%s", res.Text)
			}
			_, err = f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target})
			_, statErr := os.Stat(filepath.Join(f.dir, "env.txt"))
			if failOn == "" {
				if err != nil || statErr != nil {
					t.Fatalf("apply: %v", err)
				}
				want := []string{audit.ApplyStarted, audit.CredentialRequested, audit.CredentialMinted, audit.CredentialRevoked, audit.ApplyFinished}
				if fmt.Sprint(rec.types()) != fmt.Sprint(want) {
					t.Fatalf("events = %v, want %v", rec.types(), want)
				}
				for _, e := range rec.events {
					if e.PlanID != "p1" || e.Fence != lease.Fence || e.Env != "staging" {
						t.Fatalf("event lacks its subject: %+v", e)
					}
					if strings.Contains(fmt.Sprint(e.Detail), "hvs.") {
						t.Fatalf("a token reached the audit record: %+v", e.Detail)
					}
				}
				return
			}
			if !errors.Is(err, runner.ErrAudit) || statErr == nil {
				t.Fatalf("err = %v, applied = %v; want ErrAudit and nothing applied", err, statErr == nil)
			}
			if len(f.creds.minted) != len(f.creds.revoked) {
				t.Fatalf("minted %d, revoked %d", len(f.creds.minted), len(f.creds.revoked))
			}
			// Until the request is recorded, Vault is not even asked.
			if failOn != audit.CredentialMinted && len(f.creds.minted) != 0 {
				t.Fatalf("%d credentials minted though %s could not be recorded", len(f.creds.minted), failOn)
			}
		})
	}
}
