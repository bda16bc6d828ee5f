package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/alicebob/miniredis/v2"
	"gopkg.in/yaml.v3"

	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/deploy"
	"github.com/twokey/twokey/runner/ghsim"
)

// DemoOptions configure a demo.
type DemoOptions struct {
	Dir      string    // scratch directory; everything the demo writes goes here
	Listen   string    // address of the local Slack and its page, e.g. 127.0.0.1:7777
	RedisURL string    // a real Redis; "" runs an embedded Redis-compatible store
	Log      io.Writer // output of the Vault server; nil discards it
}

// Demo is a complete local world for twokey: a Slack workspace with a web
// page, a GitHub repository with two pull requests, a Vault dev server with
// twokey's roles and policies, Redis, and existing infrastructure to change.
// `twokey serve` runs against it unmodified, with Config and Getenv.
type Demo struct {
	URL    string // the page
	Config string // the config serve runs with
	Slack  *slacksim.Server
	env    map[string]string
	stops  []func()
}

// The demo's people. Their Slack profile titles say what each may do.
var demoUsers = []slacksim.User{
	{ID: "UALICE", Name: "alice", RealName: "Alice Nakamura", Title: "requests changes"},
	{ID: "UBOB", Name: "bob", RealName: "Bob Okafor", Title: "approver"},
	{ID: "UCAROL", Name: "carol", RealName: "Carol Jensen", Title: "approver"},
	{ID: "UDAVE", Name: "dave", RealName: "Dave Moreau", Title: "not an approver"},
	{ID: "UERIN", Name: "erin", RealName: "Erin Walsh", Title: "on call · admin"},
}

// StartDemo starts everything. On error, whatever started is stopped.
func StartDemo(ctx context.Context, o DemoOptions) (_ *Demo, err error) {
	d := &Demo{env: map[string]string{}}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if o.Log == nil {
		o.Log = io.Discard
	}
	terraform, err := Tool("terraform")
	if err != nil {
		return nil, err
	}

	// Slack, with the page.
	d.Slack = slacksim.New(slacksim.Options{})
	for _, u := range demoUsers {
		d.Slack.AddUser(u)
	}
	d.Slack.SetGroup("SAPPROVERS", "UBOB", "UCAROL")
	d.Slack.SetGroup("SONCALL", "UERIN")
	d.Slack.AddChannel("CDEPLOYS", "deploys")
	d.Slack.AddChannel("CPRODDEPLOYS", "prod-deploys")
	d.Slack.AddChannel("CSECURITY", "security")
	slackURL, err := d.serve(o.Listen, d.Slack.Handler())
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	d.URL = slackURL + "ui/"

	// GitHub: the repository and its two pull requests.
	repo, err := NewGitRepo(ctx, filepath.Join(o.Dir, "git"))
	if err != nil {
		return nil, err
	}
	gh := ghsim.New()
	gh.Token = "ghs_" + randomHex(18)
	gh.AddRepo("acme/infra", repo.CloneURL())
	for i, u := range demoUsers { // their GitHub accounts, as twokey.yaml's identities list them
		gh.AddUser(ghsim.User{Login: u.Name, ID: int64(1001 + i)})
	}
	mainSHA, err := commitDemo(ctx, repo, "main", "", "Initial infrastructure", "main")
	if err != nil {
		return nil, err
	}
	for _, pr := range []struct {
		n            int
		dir, title   string
		user, branch string
	}{
		{1, "pr-1", "Add a cache in front of the web tier", "alice", "cache"},
		{2, "pr-2", "Retire web v1 for web v2", "alice", "web-v2"},
	} {
		sha, err := commitDemo(ctx, repo, pr.branch, mainSHA, pr.title, pr.dir)
		if err != nil {
			return nil, err
		}
		if err := repo.PublishPull(ctx, pr.n, sha); err != nil {
			return nil, err
		}
		gh.SetPull("acme/infra", ghsim.Pull{Number: pr.n, HeadSHA: sha, HeadRef: pr.branch, Title: pr.title, User: pr.user})
	}
	ghURL, err := d.serve("127.0.0.1:0", gh)
	if err != nil {
		return nil, err
	}

	// Vault, set up as deploy/vault describes.
	v, err := StartVault(ctx, VaultOptions{Dir: filepath.Join(o.Dir, "vault"), Log: o.Log})
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, func() { _ = v.Stop() })
	botToken, err := v.ApplyDeploy(ctx)
	if err != nil {
		return nil, err
	}
	if err := v.Apply(ctx, VaultSetup{KV: map[string]map[string]any{
		"staging/deploy": {"password": "demo-" + randomHex(12)},
	}}); err != nil {
		return nil, err
	}

	// Redis.
	redisURL := o.RedisURL
	if redisURL == "" {
		if redisURL, err = d.embeddedRedis(); err != nil {
			return nil, err
		}
	}

	// The infrastructure as it is before any PR: main, applied.
	cfg, err := demoConfig()
	if err != nil {
		return nil, err
	}
	cfg.Slack.APIURL = slackURL + "api/"
	cfg.GitHub.APIURL = ghURL + "api/v3/"
	cfg.Redis.URL = redisURL
	cfg.Vault.Address = v.Addr
	cfg.Terraform.Path = terraform
	cfg.DataDir = filepath.Join(o.Dir, "data")
	// Runs are sandboxed: they see only their own directory and their
	// environment's state directory, and where the demo runs as root they
	// drop to another uid, which must be able to pass through the demo's
	// directory and write its environment's state.
	if err := os.Chmod(o.Dir, 0o711); err != nil {
		return nil, err
	}
	for i := range cfg.Projects[0].Environments {
		e := &cfg.Projects[0].Environments[i]
		stateDir := filepath.Join(o.Dir, "state", e.Name)
		if err := os.MkdirAll(stateDir, 0o711); err != nil {
			return nil, err
		}
		if err := os.Chmod(stateDir, 0o777); err != nil {
			return nil, err
		}
		e.BackendConfig["path"] = filepath.Join(stateDir, e.Name+".tfstate")
		if err := applyMain(ctx, terraform, filepath.Join(o.Dir, "bootstrap", e.Name), e.BackendConfig["path"]); err != nil {
			return nil, fmt.Errorf("bootstrap %s: %w", e.Name, err)
		}
		// Written here, outside the sandbox: sandboxed runs must write it too.
		if err := os.Chmod(e.BackendConfig["path"], 0o666); err != nil {
			return nil, err
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	d.Config = filepath.Join(o.Dir, "twokey.yaml")
	if err := os.WriteFile(d.Config, out, 0o600); err != nil {
		return nil, err
	}
	d.env = map[string]string{
		cfg.Slack.BotTokenEnv:   d.Slack.Options().BotToken,
		cfg.Slack.AppTokenEnv:   d.Slack.Options().AppToken,
		cfg.Vault.Auth.TokenEnv: botToken,
		cfg.GitHub.TokenEnv:     gh.Token,
		cfg.PlanKeyEnv:          base64.StdEncoding.EncodeToString([]byte(randomHex(16))),
	}
	return d, nil
}

// Getenv is the environment `twokey serve` runs with in the demo.
func (d *Demo) Getenv(key string) string { return d.env[key] }

// Close stops everything the demo started, newest first.
func (d *Demo) Close() {
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
	d.stops = nil
}

func (d *Demo) serve(addr string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	d.stops = append(d.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
	})
	return "http://" + l.Addr().String() + "/", nil
}

// embeddedRedis runs an in-process Redis-compatible store whose clock
// follows real time, so that leases expire as they would in Redis.
func (d *Demo) embeddedRedis() (string, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return "", err
	}
	stop := make(chan struct{})
	go func() {
		last := time.Now()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				mr.SetTime(now)
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	d.stops = append(d.stops, func() { close(stop); mr.Close() })
	return "redis://" + mr.Addr() + "/0", nil
}

func demoConfig() (*config.Config, error) {
	b, err := fs.ReadFile(deploy.Files, "demo/twokey.yaml")
	if err != nil {
		return nil, err
	}
	return config.Parse(bytes.NewReader(b))
}

// commitDemo commits deploy/demo/repo/<dir>/main.tf as terraform/main.tf.
func commitDemo(ctx context.Context, repo *GitRepo, branch, base, msg, dir string) (string, error) {
	tf, err := fs.ReadFile(deploy.Files, "demo/repo/"+dir+"/main.tf")
	if err != nil {
		return "", err
	}
	return repo.Commit(ctx, branch, base, msg, map[string]*string{
		"terraform/main.tf": Str(string(tf)),
		"README.md":         Str("# acme/infra\n\nThe demo's infrastructure, planned and applied by twokey.\n"),
	})
}

// applyMain applies the main branch's config to state, as the existing
// infrastructure the pull requests change.
func applyMain(ctx context.Context, terraform, dir, state string) error {
	tf, err := fs.ReadFile(deploy.Files, "demo/repo/main/main.tf")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), tf, 0o600); err != nil {
		return err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TF_CLI_CONFIG_FILE=" + os.DevNull,
		"CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	for _, args := range [][]string{
		{"init", "-input=false", "-backend-config=path=" + state},
		{"apply", "-input=false", "-auto-approve"},
	} {
		cmd := exec.CommandContext(ctx, terraform, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("terraform %s: %w: %s", args[0], err, out)
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("no randomness"))
	}
	return hex.EncodeToString(b)
}
