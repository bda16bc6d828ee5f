package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
)

// With deploy/redis/users.acl, a nonprod runner's Redis credentials get
// NOPERM on everything of prod: its job stream, job results and claims,
// saved plans, locks and ledger — and on every plan record and the audit
// stream's deletion. Its own pool's keys work. (TestRunnerPools and the
// other pool tests run whole flows as these users.)
func TestNonprodRunnerGetsNOPERMOnProd(t *testing.T) {
	s := &stack{t: t, dir: t.TempDir(), sc: stackConfig{acl: true}}
	s.redis = stacktest.Redis(t, "--aclfile", s.aclFile())
	np := s.redisAs("twokey-runner-nonprod")
	ctx := context.Background()
	if who, err := np.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "twokey-runner-nonprod" {
		t.Fatalf("ACL WHOAMI = %q, %v", who, err)
	}
	denied := map[string]func() error{
		"XADD an apply job to jobs:{prod}": func() error {
			return np.XAdd(ctx, &redis.XAddArgs{Stream: "twokey:jobs:{prod}", Values: map[string]any{"job": "{}"}}).Err()
		},
		"read prod's jobs": func() error {
			return np.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "runners", Consumer: "x", Streams: []string{"twokey:jobs:{prod}", ">"}}).Err()
		},
		"ack prod's jobs":         func() error { return np.XAck(ctx, "twokey:jobs:{prod}", "runners", "1-0").Err() },
		"set a plan to applying":  func() error { return np.HSet(ctx, "twokey:plan:{p-1}", "v", "2", "data", "{}").Err() },
		"write a prod job result": func() error { return np.Set(ctx, "twokey:jobresult:prod:{p-1}:apply", "{}", 0).Err() },
		"write prod job events": func() error {
			return np.XAdd(ctx, &redis.XAddArgs{Stream: "twokey:job:prod:{j}", Values: map[string]any{"event": "{}"}}).Err()
		},
		"claim a prod apply":         func() error { return np.SetNX(ctx, "twokey:claim:prod:{p-1}", "np", 0).Err() },
		"read a prod saved plan":     func() error { return np.Get(ctx, "twokey:planfile:prod:{p-1}").Err() },
		"write a prod saved plan":    func() error { return np.Set(ctx, "twokey:planfile:prod:{p-1}", "x", 0).Err() },
		"take prod's lock":           func() error { return np.Set(ctx, "twokey:lock:prod:{infra/prod}", "np", 0).Err() },
		"write prod's ledger":        func() error { return np.RPush(ctx, "twokey:ledger:prod:{infra/prod}", "x").Err() },
		"delete the audit stream":    func() error { return np.Del(ctx, "twokey:{audit}:stream").Err() },
		"trim the audit stream":      func() error { return np.XTrimMaxLen(ctx, "twokey:{audit}:stream", 0).Err() },
		"read an unprefixed key":     func() error { return np.Get(ctx, "other").Err() },
		"list every key":             func() error { return np.Keys(ctx, "*").Err() },
		"change the server's config": func() error { return np.ConfigSet(ctx, "appendonly", "no").Err() },
		// The commands of @connection that are also @admin or @dangerous.
		"pause every client":                func() error { return np.ClientPause(ctx, time.Millisecond).Err() },
		"kill serve's connections":          func() error { return np.Do(ctx, "CLIENT", "KILL", "USER", "twokey-serve").Err() },
		"list every client and its command": func() error { return np.ClientList(ctx).Err() },
	}
	for name, op := range denied {
		if err := op(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s: err = %v, want NOPERM", name, err)
		}
	}
	allowed := map[string]func() error{
		"read a plan record": func() error {
			if err := np.HGet(ctx, "twokey:plan:{p-1}", "data").Err(); err != redis.Nil {
				return err
			}
			return nil
		},
		"write its own job events": func() error {
			return np.XAdd(ctx, &redis.XAddArgs{Stream: "twokey:job:nonprod:{j}", Values: map[string]any{"event": "{}"}}).Err()
		},
		"save its own plan": func() error { return np.Set(ctx, "twokey:planfile:nonprod:{p-2}", "x", 0).Err() },
		"create its group": func() error {
			return np.XGroupCreateMkStream(ctx, "twokey:jobs:{nonprod}", "runners", "0").Err()
		},
	}
	for name, op := range allowed {
		if err := op(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := s.redisAs("twokey-runner-prod").XAdd(ctx, &redis.XAddArgs{Stream: "twokey:job:prod:{j}", Values: map[string]any{"event": "{}"}}).Err(); err != nil {
		t.Errorf("the prod runner cannot write its own job events: %v", err)
	}
	if err := redis.NewClient(&redis.Options{Addr: s.redis.Addr}).Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("the default user answers: %v", err)
	}
	audit := s.redisAs("twokey-auditor")
	if err := audit.Del(ctx, "twokey:{audit}:stream").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("the auditor may delete the audit stream: %v", err)
	}
}
