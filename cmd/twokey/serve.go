package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/bot"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsource"
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

	rdb, err := openRedis(ctx, cfg.Redis, secrets.RedisPassword)
	if err != nil {
		return err
	}
	defer rdb.Close()

	src, err := ghsource.New(ghsource.Options{
		APIURL: cfg.GitHub.APIURL, Token: secrets.GitHubToken, MirrorDir: filepath.Join(cfg.DataDir, "mirrors"),
	})
	if err != nil {
		return err
	}
	login := vaultcreds.TokenLogin(secrets.VaultToken)
	if cfg.Vault.Auth.Method == "approle" {
		login = vaultcreds.AppRoleLogin(cfg.Vault.Auth.Mount, secrets.VaultRoleID, secrets.VaultSecretID)
	}
	creds, err := vaultcreds.New(vaultcreds.Options{Address: cfg.Vault.Address, Login: login, Logger: log})
	if err != nil {
		return err
	}
	bin, err := exec.LookPath(cfg.Terraform.Path)
	if err != nil {
		return fmt.Errorf("terraform.path: %w", err)
	}
	key := []byte(secrets.PlanKey)
	if len(key) == 0 {
		key = make([]byte, redisplans.KeySize)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		log.Warn("no plan key set: saved plans are sealed with a key of this process alone, so only it can apply them; "+
			"give every replica the same "+cfg.PlanKeyEnv, "env", cfg.PlanKeyEnv)
	}
	plans, err := redisplans.New(rdb, keyPrefix, key)
	if err != nil {
		return err
	}
	locks := redislock.New(rdb, keyPrefix)
	run, err := runner.New(ctx, runner.Options{
		Locks: locks, Source: src, Creds: creds, Plans: plans, Binary: bin, Version: cfg.Terraform.Version,
		Env: cfg.Terraform.Env, DataDir: cfg.DataDir, VaultAddr: cfg.Vault.Address, Logger: log,
	})
	if err != nil {
		return err
	}
	store := redisstore.New(rdb, keyPrefix, 0)
	b, err := bot.New(bot.Options{
		Config: cfg, BotToken: secrets.SlackBotToken, AppToken: secrets.SlackAppToken,
		Store: store, Locks: locks, Runner: run, Dedup: store, Promos: store, Logger: log,
		ShutdownGrace: *grace, SweepInterval: *sweep,
	})
	if err != nil {
		return err
	}
	log.Info("twokey serving", "version", version, "projects", len(cfg.Projects))
	return b.Run(ctx)
}

// openRedis connects and checks the connection, so a wrong address fails at
// start rather than at the first command.
func openRedis(ctx context.Context, c config.Redis, password config.Secret) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	opts.Password = password.Reveal()
	// Fail fast: a user is told within seconds that nothing was done.
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	opts.MaxRetries = 1
	rdb := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", opts.Addr, err)
	}
	if c.Durability == "strict" {
		if err := checkDurable(pctx, rdb); err != nil {
			rdb.Close()
			return nil, err
		}
	}
	return rdb, nil
}

// checkDurable refuses a Redis that could lose acknowledged writes. A held
// lock or a fencing counter forgotten by a restart would let a second holder
// in while the first still works; with appendonly and appendfsync always,
// every write twokey made is on disk before Redis answers it.
func checkDurable(ctx context.Context, rdb redis.UniversalClient) error {
	got := map[string]string{}
	for _, key := range []string{"appendonly", "appendfsync"} {
		v, err := rdb.ConfigGet(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("redis: cannot read %s to check durability (%w); if persistence is assured another way, set redis.durability: relaxed", key, err)
		}
		got[key] = v[key]
	}
	if got["appendonly"] != "yes" || got["appendfsync"] != "always" {
		return fmt.Errorf("redis: appendonly=%q appendfsync=%q, but twokey needs appendonly yes and appendfsync always "+
			"so that a Redis restart cannot forget a held lock or reset fencing numbers (or set redis.durability: relaxed)",
			got["appendonly"], got["appendfsync"])
	}
	return nil
}
