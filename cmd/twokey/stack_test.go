package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/deploy"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

// Who plays which part in the end-to-end tests.
const (
	alice   = "UALICE" // asks for plans
	bob     = "UBOB"   // approver, through the group
	carol   = "UCAROL" // approver, through the group
	erin    = "UERIN"  // approver, listed by ID
	dave    = "UDAVE"  // member of the workspace, not an approver
	mallory = "UMALLORY"
	channel = "CDEPLOY"
	group   = "SAPPROVERS"
	// Break-glass: erin and alice are on call; grants are announced in #security.
	oncall   = "SONCALL"
	security = "CSECURITY"
)

// Secrets planted where terraform must not see them.
const (
	githubToken = "ghs_e2eGitHubTokenMustNotLeak0123"
	kvPassword  = "s3cr3t-from-vault-kv"
)

// identities are the GitHub accounts of the people above (login and
// number), as the config lists them; mallory has none.
func identities() []config.Identity {
	var out []config.Identity
	for i, u := range []struct{ slack, login string }{{alice, "alice-gh"}, {bob, "bob-gh"}, {carol, "carol-gh"}, {dave, "dave-gh"}, {erin, "erin-gh"}} {
		out = append(out, config.Identity{Slack: u.slack, GitHub: u.login, GitHubID: int64(1001 + i), Emails: []string{u.login + "@example.com"}})
	}
	return out
}

// stack is one complete twokey installation on loopback: fake Slack and
// GitHub at the protocol level; real redis-server, vault, git and terraform.
type stack struct {
	t        testing.TB
	dir      string
	out      string // what sandboxed runs may write: state files, what provisioners record
	slack    *slacksim.Server
	slackURL string
	gh       *ghsim.Server
	repo     *devstack.GitRepo
	redis    *devstack.Redis
	vault    *devstack.Vault
	botToken string // the bot's own Vault token
	config   string // path of the config file
	main     string // SHA of main
	prs      map[int]string
	logs     *syncBuffer
	// provision is appended to each resource's local-exec command.
	provision string
	sc        stackConfig
	ghURL     string
	// keys: serve's signing key (keys/serve.key, .pub) and the runners'
	// public keys every config trusts for audit events.
	keys       string
	runnerKeys []string
}

// stackConfig is what a test may change in the config.
type stackConfig struct {
	planTTL, lockTTL, applyTimeout, applyTokenTTL string
	// acl runs Redis with deploy/redis/users.acl: every process connects as
	// its own ACL user (redisUser), and the default user is off.
	acl bool
	// enterprise makes the workspace part of an Enterprise Grid
	// organization with this ID, configured as slack.enterprise_id.
	enterprise string
}

func newStack(t testing.TB, opts ...func(*stackConfig)) *stack {
	t.Helper()
	sc := stackConfig{planTTL: "1h", lockTTL: "10s", applyTimeout: "2m", applyTokenTTL: "5m"}
	for _, o := range opts {
		o(&sc)
	}
	ctx := context.Background()
	s := &stack{t: t, dir: stacktest.Dir(t), prs: map[int]string{}, logs: &syncBuffer{}}
	s.out = stacktest.Writable(t, s.dir, "out")

	s.slack = slacksim.New(slacksim.Options{PingInterval: time.Second, EnterpriseID: sc.enterprise})
	for _, u := range []slacksim.User{
		{ID: alice, Name: "alice"}, {ID: bob, Name: "bob"}, {ID: carol, Name: "carol"},
		{ID: dave, Name: "dave"}, {ID: erin, Name: "erin"},
		{ID: mallory, Name: "mallory", TeamID: "T0ELSEWHERE"},
	} {
		s.slack.AddUser(u)
	}
	s.slack.SetGroup(group, bob, carol)
	s.slack.SetGroup(oncall, erin, alice)
	s.slack.AddChannel(channel, "deploys")
	s.slack.AddChannel(security, "security")
	s.slack.AddChannel("COTHER", "random")
	srv := httptest.NewServer(s.slack.Handler())
	t.Cleanup(func() { s.slack.Close(); srv.Close() })
	s.slackURL = srv.URL + "/api/"

	var err error
	if s.repo, err = devstack.NewGitRepo(ctx, filepath.Join(s.dir, "git")); err != nil {
		t.Fatal(err)
	}
	if s.main, err = s.repo.Commit(ctx, "main", "", "init", map[string]*string{
		"README.md":         devstack.Str("infra\n"),
		"terraform/main.tf": devstack.Str("terraform {\n  backend \"local\" {}\n}\n"),
	}); err != nil {
		t.Fatal(err)
	}
	s.gh = ghsim.New()
	s.gh.Token = githubToken
	s.gh.AddRepo("acme/infra", s.repo.CloneURL())
	for _, id := range identities() {
		s.gh.AddUser(ghsim.User{Login: id.GitHub, ID: id.GitHubID, Emails: id.Emails})
	}
	ghSrv := httptest.NewServer(s.gh)
	t.Cleanup(ghSrv.Close)
	s.ghURL = ghSrv.URL

	if sc.acl {
		s.redis = stacktest.Redis(t, "--aclfile", s.aclFile())
	} else {
		s.redis = stacktest.Redis(t)
	}
	s.vault = stacktest.Vault(t)
	if s.botToken, err = s.vault.ApplyDeploy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.vault.Apply(ctx, devstack.VaultSetup{KV: map[string]map[string]any{
		"staging/deploy": {"password": kvPassword},
	}}); err != nil {
		t.Fatal(err)
	}

	s.sc = sc
	s.keys = filepath.Join(s.dir, "keys")
	if err := os.MkdirAll(s.keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := attest.WriteKeyPair(filepath.Join(s.keys, "serve")); err != nil {
		t.Fatal(err)
	}
	s.config = s.writeConfig("twokey.yaml", filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	return s
}

// writeConfig writes a config for one bot process with its own data
// directory and terraform binary, and returns its path.
func (s *stack) writeConfig(name, dataDir, terraform string) string {
	s.t.Helper()
	cfg := s.baseConfig(dataDir, terraform)
	return s.write(name, cfg)
}

// baseConfig is the stack's config: project infra with staging and prod
// (prod requires staging), both approved by the group and erin.
func (s *stack) baseConfig(dataDir, terraform string) *config.Config {
	dur := func(v string) config.Duration {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.t.Fatal(err)
		}
		return config.Duration(d)
	}
	approvers := config.Who{Groups: []string{group}, Users: []string{erin}}
	one, none := 1, 0
	breakGlass := func(env string, approvals *int) *config.BreakGlass {
		return &config.BreakGlass{OnCall: config.Who{Groups: []string{oncall}}, MaxTTL: dur("1h"), Approvals: approvals,
			Role: "twokey-" + env + "-breakglass", Policies: []string{env + "-breakglass"}, WrapTTL: dur("2m"),
			Channel: security, RemindEvery: dur("24h")}
	}
	return &config.Config{
		Slack:     config.Slack{APIURL: s.slackURL, TeamID: "T0TWOKEY", EnterpriseID: s.sc.enterprise},
		GitHub:    config.GitHub{APIURL: s.ghURL + "/api/v3/", OAuthClientID: "Iv1.twokey", WebURL: s.ghURL + "/"},
		Redis:     s.redisConfig("twokey-serve"),
		Vault:     config.Vault{Address: s.vault.Addr},
		Terraform: config.Terraform{Path: terraform, Version: "1.12.2"},
		DataDir:   dataDir,
		// Runs write state and what their provisioners record to s.out,
		// and some provisioners call the tools the tests built.
		Runner: config.Runner{Sandbox: config.Sandbox{Writable: []string{s.out},
			ReadOnly: []string{filepath.Dir(stacktest.Tool(s.t, "vault"))}}},
		Admins:     config.Who{Users: []string{erin}},
		Identities: identities(),
		Signing: config.Signing{KeyFile: filepath.Join(s.keys, "serve.key"), ServeKeys: []string{filepath.Join(s.keys, "serve.pub")},
			RunnerKeys: s.runnerKeys},
		Projects: []config.Project{{Name: "infra", Repo: "acme/infra", Dir: "terraform", Environments: []config.Environment{
			{
				Name: "staging", Approvers: approvers, Channels: []string{channel},
				BackendConfig: map[string]string{"path": s.statePath()},
				LockTTL:       dur(s.sc.lockTTL), PlanTTL: dur(s.sc.planTTL), ApplyTimeout: dur(s.sc.applyTimeout),
				Vault: config.EnvVault{
					Plan: &config.Credential{Role: "twokey-staging-plan", TTL: dur("5m")},
					Apply: config.Credential{Role: "twokey-staging-apply", TTL: dur(s.sc.applyTokenTTL), NumUses: 4,
						Secrets: []config.VaultSecret{{Path: "secret/data/staging/deploy", Env: map[string]string{"DB_PASSWORD": "password"}}}},
				},
				BreakGlass: breakGlass("staging", &one),
			},
			{
				Name: "prod", Requires: "staging", Approvers: approvers, Channels: []string{channel},
				BackendConfig: map[string]string{"path": filepath.Join(s.out, "prod.tfstate")},
				Vault:         config.EnvVault{Apply: config.Credential{Role: "twokey-prod-apply", TTL: dur("15m")}},
				BreakGlass:    breakGlass("prod", &none), // self-service
			},
		}}},
	}
}

// write writes cfg to the stack's directory after checking it is valid.
func (s *stack) write(name string, cfg *config.Config) string {
	s.t.Helper()
	out, err := yaml.Marshal(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := config.Parse(bytes.NewReader(out)); err != nil {
		s.t.Fatalf("test config %s is invalid: %v", name, err)
	}
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

func (s *stack) statePath() string { return filepath.Join(s.out, "staging.tfstate") }
func (s *stack) envDump() string   { return filepath.Join(s.out, "apply-env.txt") }

// openPR commits a terraform config creating the named resources on a branch
// and opens a pull request for it. Each resource's provisioner records the
// environment terraform ran with.
func (s *stack) openPR(n int, resources ...string) string {
	s.t.Helper()
	var tf strings.Builder
	tf.WriteString("terraform {\n  backend \"local\" {}\n}\n")
	for _, r := range resources {
		fmt.Fprintf(&tf, `
resource "terraform_data" %q {
  input = "pr-%d"
  provisioner "local-exec" {
    command = "env > %s%s"
  }
}
`, r, n, s.envDump(), s.provision)
	}
	return s.openPRWith(n, tf.String())
}

// openPRWith opens pull request n with main.tf as its terraform config.
func (s *stack) openPRWith(n int, mainTF string) string {
	s.t.Helper()
	ctx := context.Background()
	sha, err := s.repo.Commit(ctx, fmt.Sprintf("pr-%d", n), s.main, fmt.Sprintf("PR %d", n),
		map[string]*string{"terraform/main.tf": devstack.Str(mainTF)})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.repo.PublishPull(ctx, n, sha); err != nil {
		s.t.Fatal(err)
	}
	s.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: fmt.Sprintf("pr-%d", n), Title: fmt.Sprintf("Change %d", n)})
	s.prs[n] = sha
	return sha
}

// env is the bot's process environment: its own tokens, which terraform
// must never see.
func (s *stack) env(key string) string {
	return map[string]string{
		"SLACK_BOT_TOKEN":       s.slack.Options().BotToken,
		"SLACK_APP_TOKEN":       s.slack.Options().AppToken,
		"VAULT_TOKEN":           s.botToken,
		"GITHUB_TOKEN":          githubToken,
		"TWOKEY_PLAN_KEY":       "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
		"TWOKEY_REDIS_PASSWORD": redisPassword("twokey-serve"),
	}[key]
}

// aclFile writes deploy/redis/users.acl with each user's test password
// (redisPassword), and a user "twokey-test" that may do anything, for the
// tests' own look at Redis and for the attacker who has everything.
func (s *stack) aclFile() string {
	s.t.Helper()
	return writeACLFile(s.t, s.dir)
}

// writeACLFile writes the ACL file aclFile describes into dir.
func writeACLFile(t testing.TB, dir string) string {
	t.Helper()
	b, err := deploy.Files.ReadFile("redis/users.acl")
	if err != nil {
		t.Fatal(err)
	}
	acl := regexp.MustCompile(`(?m)^user (\S+) (.*)#REPLACE_WITH_SHA256_OF_\S+_PASSWORD`).ReplaceAllStringFunc(string(b), func(line string) string {
		user := strings.Fields(line)[1]
		sum := sha256.Sum256([]byte(redisPassword(user)))
		return regexp.MustCompile(`#REPLACE_WITH_SHA256_OF_\S+_PASSWORD`).ReplaceAllString(line, "#"+hex.EncodeToString(sum[:]))
	})
	acl += "user twokey-test on >" + redisPassword("twokey-test") + " ~* &* +@all\n"
	path := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(path, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// redisPassword is an ACL user's password in the tests.
func redisPassword(user string) string { return "pw-" + user }

// redisConfig is how a process connects as user: as that ACL user when
// the stack runs Redis with ACLs, else as the default user.
func (s *stack) redisConfig(user string) config.Redis {
	if !s.sc.acl {
		return config.Redis{URL: s.redis.URL(), Durability: "relaxed"}
	}
	return config.Redis{URL: "redis://" + user + "@" + s.redis.Addr + "/0", PasswordEnv: "TWOKEY_REDIS_PASSWORD", Durability: "relaxed"}
}

// redisAs is a client of the stack's Redis as user ("" for the test's own
// user, who may do anything).
func (s *stack) redisAs(user string) *redis.Client {
	s.t.Helper()
	o := &redis.Options{Addr: s.redis.Addr}
	if s.sc.acl {
		if user == "" {
			user = "twokey-test"
		}
		o.Username, o.Password = user, redisPassword(user)
	}
	c := redis.NewClient(o)
	s.t.Cleanup(func() { c.Close() })
	return c
}

// startBot runs `twokey serve` in process and returns a function that stops
// it, as SIGTERM would, and waits for it to exit.
func (s *stack) startBot(flags ...string) (stop func()) {
	s.t.Helper()
	before := s.slack.Connections()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	args := append([]string{"serve", "--config", s.config, "--log-format", "text", "--log-level", "debug"}, flags...)
	go func() { done <- Main(ctx, args, s.logs, s.logs, s.env) }()
	if err := s.slack.WaitConnected(before+1, 20*time.Second); err != nil {
		cancel()
		s.t.Fatalf("bot did not connect: %v\nlogs:\n%s", err, s.logs.String())
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					s.t.Errorf("twokey serve exited %d\nlogs:\n%s", code, s.logs.String())
				}
			case <-time.After(30 * time.Second):
				s.t.Errorf("twokey serve did not stop")
			}
			// Slack notices the closed socket a moment later.
			for deadline := time.Now().Add(5 * time.Second); s.slack.Connections() > before && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	s.t.Cleanup(stop)
	return stop
}

// slash types `/tf text` as user and waits for the bot's ack.
func (s *stack) slash(user, text string) {
	s.t.Helper()
	id, err := s.slack.SlashCommand(user, channel, text)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.slack.WaitAcked(id, 5*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// click presses a button on msg as user and waits for the ack.
func (s *stack) click(user string, msg slacksim.Message, action string) {
	s.t.Helper()
	id, err := s.slack.Click(user, msg.Channel, msg.TS, action)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.slack.WaitAcked(id, 5*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

const waitFor = 60 * time.Second

// planMessage waits for the top-level message of PR n to contain want.
func (s *stack) planMessage(n int, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.ThreadTS == "" && !m.Ephemeral && strings.Contains(m.Content(), fmt.Sprintf("PR #%d", n)) &&
				strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no message for PR #%d containing %q\nmessages:\n%s\nlogs:\n%s", n, want, s.dump(), s.logs.String())
	}
	return found
}

// ephemeral waits for a message shown only to user that contains want.
func (s *stack) ephemeral(user, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.Ephemeral && m.For == user && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no ephemeral message to %s containing %q\nmessages:\n%s", user, want, s.dump())
	}
	return found
}

// thread waits for a reply in msg's thread containing want.
func (s *stack) thread(msg slacksim.Message, want string) slacksim.Message {
	s.t.Helper()
	return s.threadWithin(waitFor, msg, want)
}

// threadWithin is thread with its own time limit.
func (s *stack) threadWithin(limit time.Duration, msg slacksim.Message, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(limit, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.ThreadTS == msg.TS && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no reply in thread %s containing %q\nmessages:\n%s\nlogs:\n%s", msg.TS, want, s.dump(), s.logs.String())
	}
	return found
}

func (s *stack) dump() string {
	var b strings.Builder
	for _, m := range s.slack.Messages() {
		fmt.Fprintf(&b, "--- ts=%s thread=%s ephemeral=%v for=%s edits=%d\n%s\n", m.TS, m.ThreadTS, m.Ephemeral, m.For, m.Edits, m.Content())
	}
	return b.String()
}

// applied reports whether the resource is in the staging state.
func (s *stack) applied(resource string) bool { return s.appliedIn("staging", resource) }

// appliedIn reports whether the resource is in an environment's state.
func (s *stack) appliedIn(env, resource string) bool {
	path := s.statePath()
	if env != "staging" {
		path = filepath.Join(s.out, env+".tfstate")
	}
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), fmt.Sprintf(`"name": %q`, resource))
}

// syncBuffer collects the logs of every bot process.
type syncBuffer = stacktest.Buffer
