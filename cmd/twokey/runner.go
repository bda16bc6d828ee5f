package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/promstats"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/redisjobs"
)

// runnerCmd is `twokey runner --pool <name>`: a worker that plans and
// applies the environments of one pool, and the only process holding that
// pool's Vault login.
func runnerCmd(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("runner", flag.ContinueOnError)
	var common commonFlags
	common.register(fs)
	pool := fs.String("pool", config.DefaultPool, "the pool whose jobs this worker runs")
	host, _ := os.Hostname()
	name := fs.String("name", fmt.Sprintf("%s-%d", host, os.Getpid()), "this worker's name, unique in its pool")
	grace := fs.Duration("shutdown-grace", 2*time.Minute, "on SIGTERM, how long to let a running job finish before interrupting it")
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
	if _, ok := cfg.PoolFor(*pool); !ok {
		return fmt.Errorf("--pool: no pool %q in %s", *pool, common.config)
	}
	secrets, err := cfg.LoadSecrets(getenv, cfg.ForRunner(*pool))
	if err != nil {
		return err
	}
	log = log.With("pool", *pool, "worker", *name)
	stats := promstats.New("runner")
	deps, err := connect(ctx, cfg, secrets, log, *pool, stats)
	if err != nil {
		return err
	}
	defer deps.rdb.Close()
	defer deps.audit.Close()
	defer deps.creds.Close() // ends the Vault login's LifetimeWatcher
	ro, err := deps.runnerOptions(ctx, cfg, log, *name)
	if err != nil {
		return err
	}
	run, err := runner.New(ctx, ro)
	if err != nil {
		return err
	}
	// The record says which config this worker runs with, as serve's does.
	digest, err := fileDigest(common.config)
	if err != nil {
		return err
	}
	if err := deps.audit.Record(ctx, audit.Event{Type: audit.ConfigLoaded, Actor: audit.Actor{ID: "twokey", Name: *name},
		Detail: map[string]string{"config_sha256": digest, "pool": *pool}}); err != nil {
		return fmt.Errorf("audit record config_loaded: %w", err)
	}
	w, err := redisjobs.NewWorker(redisjobs.WorkerOptions{
		Redis: deps.rdb, Prefix: keyPrefix, Pool: *pool, Name: *name, Exec: run,
		Store: redisstore.New(deps.rdb, keyPrefix, 0), Visibility: cfg.Runner.VisibilityTimeout.D(), Grace: *grace,
		Notary: deps.keys.notary(), Signer: deps.keys.signer, Audit: deps.audit,
		Logger: log,
		Target: func(project, env string) (runner.Target, string, error) {
			p, e, err := cfg.Resolve(project, env)
			if err != nil {
				return runner.Target{}, "", err
			}
			return target(cfg, p, e), e.Pool, nil
		},
	})
	if err != nil {
		return err
	}
	if common.metricsListen == "" {
		return w.Run(ctx)
	}
	checks := []check{redisReady(deps.rdb)}
	if deps.creds != nil {
		checks = append(checks, vaultReady(cfg.Vault.Address))
	}
	stats.Queues(func(ctx context.Context) (map[string]promstats.Queue, error) {
		d, err := redisjobs.QueueDepth(ctx, deps.rdb, keyPrefix, *pool)
		return map[string]promstats.Queue{*pool: {Depth: d.Jobs, Oldest: d.Oldest}}, err
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return serveMetrics(gctx, common.metricsListen, stats, checks, log) })
	return g.Wait()
}
