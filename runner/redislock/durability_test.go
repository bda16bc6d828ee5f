package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// restartWithLock takes a lock as a pending plan would, restarts Redis with
// SHUTDOWN NOSAVE, and reports what a second plan then gets.
func restartWithLock(t *testing.T, args ...string) (first runner.Lease, second error, fenceAfter int64, locks *Locks) {
	t.Helper()
	return restartAfter(t, func(ctx context.Context, srv *devstack.Redis) error { return srv.ShutdownNoSave(ctx) }, args...)
}

// restartAfter takes a lock, stops Redis with stop, starts it again, and
// reports what a second plan then gets.
func restartAfter(t *testing.T, stop func(context.Context, *devstack.Redis) error, args ...string) (first runner.Lease, second error, fenceAfter int64, locks *Locks) {
	t.Helper()
	ctx := context.Background()
	srv := stacktest.Redis(t, args...)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	locks = New(rdb, "twokey:")
	first, err := locks.Acquire(ctx, "infra/prod", runner.Holder{User: "UALICE", PR: 42}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(ctx, srv); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	_, second = locks.Acquire(ctx, "infra/prod", runner.Holder{User: "UBOB", PR: 43}, time.Hour)
	h, _, _ := locks.Holder(ctx, "infra/prod")
	return first, second, h.Fence, locks
}

// With the durability twokey requires (appendonly yes, appendfsync always)
// a restart keeps the lock and the fencing counter: no second holder while
// the first still holds its lease.
func TestRedisRestartKeepsLockWhenDurable(t *testing.T) {
	first, second, _, locks := restartWithLock(t, "--appendonly", "yes", "--appendfsync", "always")
	var le *runner.LockedError
	if !errors.As(second, &le) || le.Holder.User != "UALICE" || le.Holder.Fence != first.Fence {
		t.Fatalf("after restart a second plan got %v, want locked by the first holder", second)
	}
	ctx := context.Background()
	if err := locks.Refresh(ctx, first, time.Hour); err != nil {
		t.Fatalf("the first holder lost its lease in the restart: %v", err)
	}
	if err := locks.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	next, err := locks.Acquire(ctx, "infra/prod", runner.Holder{User: "UBOB"}, time.Hour)
	if err != nil || next.Fence != first.Fence+1 {
		t.Fatalf("fence after restart = %d (%v), want %d", next.Fence, err, first.Fence+1)
	}
}

// Without it the restart forgets the lock and resets the fence: a second
// holder is granted the same fence while the first still believes it holds
// the lease. This is why `twokey serve` refuses such a Redis.
func TestRedisRestartLosesLockWhenVolatile(t *testing.T) {
	first, second, fence, _ := restartWithLock(t)
	if second != nil {
		t.Fatalf("second acquire: %v (expected the volatile server to have forgotten the lock)", second)
	}
	if fence > first.Fence {
		t.Fatalf("fence %d after restart, want it reset (≤ %d)", fence, first.Fence)
	}
}

// appendfsync everysec: the AOF is written to the operating system before
// Redis answers and flushed to disk once a second, so a clean restart and a
// crash of the Redis process both keep the lock. What everysec can lose is
// the last second of acknowledged writes when the machine itself fails
// (power, kernel), which no test here can cause; that is why twokey's
// strict mode asks for always.
func TestRedisEverysecKeepsLockAcrossRestartAndProcessCrash(t *testing.T) {
	for name, stop := range map[string]func(context.Context, *devstack.Redis) error{
		"SHUTDOWN NOSAVE": func(ctx context.Context, srv *devstack.Redis) error { return srv.ShutdownNoSave(ctx) },
		"SIGKILL":         func(_ context.Context, srv *devstack.Redis) error { srv.Kill(); return nil },
	} {
		t.Run(name, func(t *testing.T) {
			first, second, _, _ := restartAfter(t, stop, "--appendonly", "yes", "--appendfsync", "everysec")
			var le *runner.LockedError
			if !errors.As(second, &le) || le.Holder.Fence != first.Fence {
				t.Fatalf("after %s a second plan got %v, want locked by the first holder", name, second)
			}
		})
	}
}
