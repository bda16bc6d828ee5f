package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner/redisplans"
)

// keys are one process's signing key and the public keys it trusts, from
// the config's signing block.
type keys struct {
	signer *attest.Signer // this process's; nil for a reader (audit verify)
	serve  attest.Keyring // serve processes: plans, approvals, grants, audit
	audit  attest.Keyring // serve and runner processes: audit events
	role   string         // serve, runner, reader
	log    *slog.Logger
}

// loadKeys reads the keys a process of role needs. serve without a key
// file signs with a key of its own (one embedded replica, nobody else can
// verify); a runner must have serve's public keys, or it could verify no
// grant, and its own key, so that its audit events can be verified.
func loadKeys(cfg *config.Config, log *slog.Logger, role string) (keys, error) {
	s := cfg.Signing
	k := keys{role: role, log: log}
	var errs []error
	var err error
	if k.serve, err = attest.LoadKeyring(s.ServeKeys...); err != nil {
		errs = append(errs, err)
	}
	runners, err := attest.LoadKeyring(s.RunnerKeys...)
	if err != nil {
		errs = append(errs, err)
	}
	k.audit = k.serve.Union(runners)
	switch {
	case role == "reader":
	case s.KeyFile != "":
		if k.signer, err = attest.LoadSigner(s.KeyFile); err != nil {
			errs = append(errs, err)
		}
	case role == "runner":
		errs = append(errs, errors.New("signing.key_file: a runner needs its own key to sign its audit events (twokey keygen)"))
	case !cfg.Runner.IsEmbedded():
		errs = append(errs, errors.New("signing.key_file: serve needs a key whose public half the runners list under signing.serve_keys"))
	default:
		if k.signer, err = attest.GenerateSigner(); err != nil {
			errs = append(errs, err)
		}
		log.Warn("no signing.key_file: approvals, grants and audit events are signed with a key of this process alone; " +
			"another serve replica cannot count them and `twokey audit verify` cannot check them")
	}
	if role == "runner" && k.serve.Len() == 0 {
		errs = append(errs, errors.New("signing.serve_keys: a runner needs the serve processes' public keys to verify the grants it applies"))
	}
	if err := errors.Join(errs...); err != nil {
		return keys{}, err
	}
	if k.signer != nil {
		log.Info("signing", "key_id", k.signer.KeyID(), "trusted_serve_keys", k.serve.IDs(), "trusted_audit_keys", k.audit.IDs())
	}
	return k, nil
}

// notary is what serve signs and counts approvals with, and what a runner
// verifies grants with (runners never sign approvals).
func (k keys) notary() *approvals.Notary {
	if k.role == "serve" {
		return approvals.NewNotary(k.signer, k.serve)
	}
	return approvals.NewNotary(nil, k.serve)
}

// auditTrust is who may write audit events, with this process's own key.
func (k keys) auditTrust() attest.Keyring {
	if k.signer != nil {
		return k.audit.With(k.signer.Public())
	}
	return k.audit
}

// keygen is `twokey keygen <path>`: a new ed25519 key in <path>.key and its
// public half in <path>.pub.
func keygen(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] == "" || args[0][0] == '-' {
		return errors.New("usage: twokey keygen <path>  (writes <path>.key, mode 0600, and <path>.pub)")
	}
	s, err := attest.WriteKeyPair(args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "key %s: private %s.key (keep it on this host only), public %s.pub (list it under signing.serve_keys or signing.runner_keys everywhere)\n",
		s.KeyID(), args[0], args[0])
	return nil
}

// lockPools maps an environment's lock key (project/env) to its runner
// pool, so that the lock's keys in Redis name the pool (per-pool ACL users).
func lockPools(cfg *config.Config) func(key string) string {
	return func(key string) string {
		project, env, _ := strings.Cut(key, "/")
		_, e, err := cfg.Resolve(project, env)
		if err != nil {
			return ""
		}
		return e.Pool
	}
}

// discardEverywhere is serve's plan store when runner pools run the plans:
// serve holds no pool's plan key, so it only deletes a plan's saved file, in
// whichever pool it is.
type discardEverywhere []*redisplans.Store

// poolPlans is a discardEverywhere over the config's pools.
func poolPlans(rdb redis.UniversalClient, cfg *config.Config) discardEverywhere {
	var d discardEverywhere
	unused := make([]byte, redisplans.KeySize) // never seals or opens anything
	for _, p := range cfg.Pools {
		s, err := redisplans.ForPool(rdb, keyPrefix, p.Name, unused)
		if err == nil {
			d = append(d, s)
		}
	}
	return d
}

var errNoPlanKey = errors.New("serve holds no plan key when runner pools run plans")

func (d discardEverywhere) Save(context.Context, string, []byte, time.Duration) error {
	return errNoPlanKey
}
func (d discardEverywhere) Load(context.Context, string) ([]byte, error) { return nil, errNoPlanKey }
func (d discardEverywhere) Delete(ctx context.Context, id string) error {
	var errs []error
	for _, s := range d {
		errs = append(errs, s.Delete(ctx, id))
	}
	return errors.Join(errs...)
}
