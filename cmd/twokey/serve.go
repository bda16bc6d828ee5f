package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit/redisaudit"
	"github.com/twokey/twokey/bot"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/ghsync"
	"github.com/twokey/twokey/policy"
	"github.com/twokey/twokey/promstats"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsource"
	"github.com/twokey/twokey/runner/redisjobs"
	"github.com/twokey/twokey/runner/redislock"
	"github.com/twokey/twokey/runner/redisplans"
	"github.com/twokey/twokey/runner/vaultcreds"
)

// keyPrefix namespaces every Redis key twokey writes.
const keyPrefix = "twokey:"

func serve(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	grace := fs.Duration("shutdown-grace", 2*time.Minute, "on SIGTERM, how long to let running applies finish before interrupting them")
	sweep := fs.Duration("sweep-interval", 5*time.Second, "how often open plans are checked for expiry and for work whose bot died")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := positive("shutdown-grace", *grace); err != nil {
		return err
	}
	log, err := common.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(common.config)
	if err != nil {
		return fmt.Errorf("%s:\n%w", common.config, err)
	}
	secrets, err := cfg.LoadSecrets(getenv, cfg.ForServe())
	if err != nil {
		return err
	}

	stats := promstats.New("serve")
	deps, err := connect(ctx, cfg, secrets, log, "", stats)
	if err != nil {
		return err
	}
	defer deps.rdb.Close()
	defer deps.audit.Close()
	defer deps.creds.Close() // ends the Vault login's LifetimeWatcher
	digest, err := fileDigest(common.config)
	if err != nil {
		return err
	}

	// serve runs plans itself, or dispatches them to runner pools and then
	// holds no Vault login at all.
	var (
		run      change.Runner
		outcomes change.Outcomes
	)
	if cfg.Runner.IsEmbedded() {
		ro, err := deps.runnerOptions(ctx, cfg, log, "serve")
		if err != nil {
			return err
		}
		r, err := runner.New(ctx, ro)
		if err != nil {
			return err
		}
		run = r
	} else {
		// Job results count only if a runner key signed them (redisjobs/result.go).
		runnerKeys, err := attest.LoadKeyring(cfg.Signing.RunnerKeys...)
		if err != nil {
			return err
		}
		if runnerKeys.Len() == 0 {
			return errors.New("signing.runner_keys: serve with runner pools trusts only job results a runner key signed; list the runners' public keys")
		}
		client := redisjobs.NewClient(redisjobs.ClientOptions{
			Redis: deps.rdb, Prefix: keyPrefix, Source: deps.src, Plans: poolPlans(deps.rdb, cfg), Logger: log, Signer: deps.keys.signer,
			Runners: runnerKeys, Audit: deps.audit,
			Pool: func(project, env string) (string, error) {
				_, e, err := cfg.Resolve(project, env)
				if err != nil {
					return "", err
				}
				return e.Pool, nil
			},
		})
		run, outcomes = client, client
	}
	store := redisstore.New(deps.rdb, keyPrefix, 0)
	wrapping, err := vaultcreds.NewWrapChecker(cfg.Vault.Address, 10*time.Second)
	if err != nil {
		return err
	}
	b, err := bot.New(bot.Options{
		APIURL: cfg.Slack.APIURL, TeamID: cfg.Slack.TeamID, EnterpriseID: cfg.Slack.EnterpriseID,
		BotToken: secrets.SlackBotToken, AppToken: secrets.SlackAppToken, Scope: scopeOf(cfg),
		Unsandboxed: cfg.Runner.Sandbox.Mode == config.SandboxNone, VaultAddress: cfg.Vault.Address,
		BreakGlass: breakGlassTargets(cfg), ConfigDigest: digest, Logger: log,
		HTTPClient: &http.Client{Transport: stats.Transport("slack", nil)},
	})
	if err != nil {
		return err
	}
	sync, err := ghsync.New(ghsync.Options{
		Plans: store, Locks: deps.locks, GitHub: deps.src, State: store, Audit: deps.audit, Logger: log,
		Name: b.Directory().Name,
		Repo: func(project string) (string, bool) {
			for _, p := range cfg.Projects {
				if p.Name == project {
					return p.Repo, true
				}
			}
			return "", false
		},
		Scope: scopeOf(cfg),
	})
	if err != nil {
		return err
	}
	linker, err := newLinker(cfg)
	if err != nil {
		return err
	}
	svc, err := change.New(change.Options{
		Links: store, Linker: linker, Requirements: deps.src,
		Config: cfg, Store: store, Grants: store, Locks: deps.locks, Runner: run, Outcomes: outcomes, Verifications: store, Target: targets(cfg),
		Dedup: store, Promos: store, Audit: deps.audit, History: deps.audit, Trim: deps.audit.Trim,
		Directory: b.Directory(), Notify: b, Progress: b, Drift: b, Changed: sync.Changed, Wrapping: wrapping, Notary: deps.keys.notary(),
		Logger: log, ShutdownGrace: *grace, SweepInterval: *sweep, Stats: stats,
	})
	if err != nil {
		return err
	}
	log.Info("twokey serving", "version", version, "projects", len(cfg.Projects), "embedded_runner", cfg.Runner.IsEmbedded())
	// One group per process: the Slack socket, the service's sweeper and
	// work, and the GitHub syncer all end with ctx, and serve returns when
	// all of them have.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.Run(gctx, svc) })
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error { return sync.Run(gctx) })
	g.Go(func() error { return runDriftSchedules(gctx, cfg, svc, wallClock, log) })
	if common.metricsListen != "" {
		checks := []check{redisReady(deps.rdb), {"slack", func(context.Context) error {
			if !b.Connected() {
				return errors.New("socket mode not connected")
			}
			return nil
		}}}
		if deps.creds != nil {
			checks = append(checks, vaultReady(cfg.Vault.Address))
		}
		if len(cfg.Pools) > 0 {
			stats.Queues(queueDepths(deps.rdb, cfg))
		}
		g.Go(func() error { return serveMetrics(gctx, common.metricsListen, stats, checks, log) })
	}
	return g.Wait()
}

// deps are the connections serve and runner share.
type deps struct {
	rdb   redis.UniversalClient
	locks *redislock.Locks
	plans *redisplans.Store
	src   *ghsource.Source
	audit *redisaudit.Log
	creds *vaultcreds.Client // nil without a Vault login
	keys  keys               // signing (signing.go)
	stats *promstats.Metrics
}

// connect opens Redis and GitHub, and — if secrets hold one — the Vault
// login of pool ("" for the top-level login).
func connect(ctx context.Context, cfg *config.Config, secrets config.Secrets, log *slog.Logger, pool string, stats *promstats.Metrics) (*deps, error) {
	rdb, err := openRedis(ctx, cfg.Redis, secrets.RedisPassword)
	if err != nil {
		return nil, err
	}
	d := &deps{rdb: rdb, locks: redislock.New(rdb, keyPrefix, redislock.WithPools(lockPools(cfg)), lockReplicaWait(cfg.Redis)), stats: stats}
	fail := func(err error) (*deps, error) {
		rdb.Close()
		return nil, err
	}
	role := "serve"
	if pool != "" {
		role = "runner"
	}
	if d.keys, err = loadKeys(cfg, log, role); err != nil {
		return fail(err)
	}
	if d.audit, err = openAudit(rdb, cfg, log, d.keys); err != nil {
		return fail(err)
	}
	var app *ghsource.App // a GitHub App instead of the token; reports through check runs
	if cfg.GitHub.App() {
		app = &ghsource.App{ID: cfg.GitHub.AppID, InstallationID: cfg.GitHub.InstallationID, PrivateKey: secrets.GitHubAppKey}
	}
	if d.src, err = ghsource.New(ghsource.Options{
		APIURL: cfg.GitHub.APIURL, Token: secrets.GitHubToken, App: app, MirrorDir: filepath.Join(cfg.DataDir, "mirrors"),
		HTTPClient: &http.Client{Transport: stats.Transport("github", nil)},
		// A serve whose plans run elsewhere has no use for the commits.
		Prefetch: role == "serve" && cfg.Runner.IsEmbedded(),
	}); err != nil {
		return fail(err)
	}
	key := []byte(secrets.PlanKey)
	if len(key) == 0 {
		key = make([]byte, redisplans.KeySize)
		if _, err := rand.Read(key); err != nil {
			return fail(err)
		}
		log.Warn("no plan key set: saved plans are sealed with a key of this process alone, so only it can apply them; "+
			"give every replica and runner the same "+cfg.PlanKeyEnv, "env", cfg.PlanKeyEnv)
	}
	if d.plans, err = redisplans.ForPool(rdb, keyPrefix, pool, key); err != nil {
		return fail(err)
	}
	auth := cfg.Vault.Auth
	if p, ok := cfg.PoolFor(pool); ok && pool != "" {
		auth = p.Vault
	}
	var login vaultcreds.Login
	switch {
	case secrets.VaultToken != "":
		login = vaultcreds.TokenLogin(secrets.VaultToken)
	case secrets.VaultRoleID != "":
		var opts []vaultcreds.AppRoleOption
		if auth.SecretIDWrapped {
			opts = append(opts, vaultcreds.WrappedSecretID())
		}
		login = vaultcreds.AppRoleLogin(auth.Mount, secrets.VaultRoleID, secrets.VaultSecretID, opts...)
	case auth.Method == "kubernetes" && (pool != "" || cfg.Runner.IsEmbedded()):
		login = vaultcreds.KubernetesLogin(auth.Mount, auth.Role, auth.TokenPath)
	}
	if login != nil {
		if d.creds, err = vaultcreds.New(vaultcreds.Options{Address: cfg.Vault.Address, Login: login, Logger: log}); err != nil {
			return fail(err)
		}
	}
	return d, nil
}

// runnerOptions are a runner's options from the config.
func (d *deps) runnerOptions(ctx context.Context, cfg *config.Config, log *slog.Logger, name string) (runner.Options, error) {
	sb, err := sandbox(ctx, cfg.Runner.Sandbox, log)
	if err != nil {
		return runner.Options{}, err
	}
	o := runner.Options{
		Locks: d.locks, Source: d.src, Plans: d.plans, Sandbox: sb, Binary: cfg.Terraform.Path, Audit: d.audit, Name: name,
		Version: cfg.Terraform.Version, Env: cfg.Terraform.Env, DataDir: cfg.DataDir, VaultAddr: cfg.Vault.Address, Logger: log,
		// Every plan gets the built-in risk flags, and its environment's
		// policies where the config names a directory.
		Policy: policy.New(),
	}
	if d.creds != nil {
		o.Creds = timedCreds{d.creds, d.stats}
	}
	return o, nil
}

// clusterStateReload is how often a Cluster client asks for the slots'
// masters at the most.
const clusterStateReload = 2 * time.Second

// openRedis connects — to one Redis, through Sentinel, or to a Cluster —
// and checks the connection, so a wrong address fails at start rather than
// at the first command.
func openRedis(ctx context.Context, c config.Redis, password config.Secret) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	u := &redis.UniversalOptions{
		Addrs: []string{opts.Addr}, DB: opts.DB, Username: opts.Username, Password: password.Reveal(), TLSConfig: opts.TLSConfig,
		// Fail fast: a user is told within seconds that nothing was done.
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: 1,
	}
	switch {
	case len(c.Sentinel.Addrs) > 0:
		u.Addrs, u.MasterName = c.Sentinel.Addrs, c.Sentinel.Master
	case len(c.Cluster.Addrs) > 0:
		u.Addrs, u.IsClusterMode = c.Cluster.Addrs, true
	}
	var rdb redis.UniversalClient
	if u.IsClusterMode {
		// The client learns which master holds which slots again on a
		// redirection, or else once this long has passed (a minute by
		// default): a master that died and whose replica took over is
		// tried in vain until then.
		co := u.Cluster()
		co.ClusterStateReloadInterval = clusterStateReload
		rdb = redis.NewClusterClient(co)
	} else {
		rdb = redis.NewUniversalClient(u)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %v: %w", u.Addrs, err)
	}
	if c.Durability != "relaxed" {
		if err := checkDurable(pctx, rdb, c, password); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	return rdb, nil
}

// openAudit opens the audit chain with the config's retention and file sink.
func openAudit(rdb redis.UniversalClient, cfg *config.Config, log *slog.Logger, k keys) (*redisaudit.Log, error) {
	return redisaudit.New(rdb, redisaudit.Options{Prefix: keyPrefix, File: cfg.Audit.File,
		MaxAge: cfg.Audit.MaxAge.D(), MinAge: cfg.Audit.MinAge.D(), MaxLen: cfg.Audit.MaxLen, Logger: log,
		Signer: k.signer, Trust: k.auditTrust()})
}

// fileDigest is the sha256 of a file, recorded when a process starts.
func fileDigest(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// breakGlassTargets are the environments the break-glass form offers.
func breakGlassTargets(cfg *config.Config) []bot.BreakGlassTarget {
	var out []bot.BreakGlassTarget
	for _, p := range cfg.Projects {
		for _, e := range p.Environments {
			if e.BreakGlass != nil {
				out = append(out, bot.BreakGlassTarget{Project: p.Name, Env: e.Name, MaxTTL: e.BreakGlass.MaxTTL.D()})
			}
		}
	}
	return out
}
