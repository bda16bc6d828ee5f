package redislock

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

func newLocks(t *testing.T) (*Locks, *redis.Client) {
	t.Helper()
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, "test:"), rdb
}

func TestOneWinner(t *testing.T) {
	locks, _ := newLocks(t)
	ctx := context.Background()
	const contenders = 2
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []runner.Lease
		losers  []*runner.LockedError
	)
	start := make(chan struct{})
	for i := range contenders {
		wg.Go(func() {
			<-start
			l, err := locks.Acquire(ctx, "infra/staging", runner.Holder{User: "U" + string(rune('A'+i)), PR: 40 + i}, time.Minute)
			mu.Lock()
			defer mu.Unlock()
			var le *runner.LockedError
			switch {
			case err == nil:
				winners = append(winners, l)
			case errors.As(err, &le):
				losers = append(losers, le)
			default:
				t.Errorf("acquire: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 || len(losers) != contenders-1 {
		t.Fatalf("winners %d, losers %d", len(winners), len(losers))
	}
	h := losers[0].Holder
	if h.User == "" || h.PR == 0 || h.Fence != winners[0].Fence || !errors.Is(losers[0], runner.ErrLocked) {
		t.Fatalf("loser was not told who holds the lock: %+v", losers[0])
	}
}

func TestOwnerSemantics(t *testing.T) {
	locks, rdb := newLocks(t)
	ctx := context.Background()
	lease, err := locks.Acquire(ctx, "infra/prod", runner.Holder{User: "UA", PR: 1, Since: time.Now()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	thief := lease
	thief.Owner = "not-the-owner"

	if err := locks.Refresh(ctx, thief, time.Minute); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("refresh by non-owner: err = %v, want ErrLockLost", err)
	}
	if err := locks.Release(ctx, thief); err != nil {
		t.Fatalf("release by non-owner: %v", err)
	}
	if h, held, err := locks.Holder(ctx, "infra/prod"); err != nil || !held || h.User != "UA" || h.Fence != lease.Fence {
		t.Fatalf("release by non-owner freed the lock: %+v %v %v", h, held, err)
	}
	if err := locks.Refresh(ctx, lease, 2*time.Minute); err != nil {
		t.Fatalf("refresh by owner: %v", err)
	}
	if ttl := rdb.PTTL(ctx, "test:lock:{infra/prod}").Val(); ttl < 90*time.Second {
		t.Fatalf("refresh did not extend the lease: pttl %v", ttl)
	}
	if err := locks.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := locks.Holder(ctx, "infra/prod"); held {
		t.Fatal("lock still held after release")
	}
	// Refresh never re-acquires a lock that is gone.
	if err := locks.Refresh(ctx, lease, time.Minute); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("refresh after release: err = %v", err)
	}
	if _, held, _ := locks.Holder(ctx, "infra/prod"); held {
		t.Fatal("refresh after release took the lock")
	}
}

func TestExpiryFreesLockAndFenceRises(t *testing.T) {
	locks, _ := newLocks(t)
	ctx := context.Background()
	first, err := locks.Acquire(ctx, "infra/dev", runner.Holder{User: "UA"}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locks.Acquire(ctx, "infra/dev", runner.Holder{User: "UB"}, time.Minute); !errors.Is(err, runner.ErrLocked) {
		t.Fatalf("second acquire before expiry: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var second runner.Lease
	for {
		second, err = locks.Acquire(ctx, "infra/dev", runner.Holder{User: "UB"}, time.Minute)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock not freed by its TTL: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if second.Fence <= first.Fence {
		t.Fatalf("fence did not rise: %d then %d", first.Fence, second.Fence)
	}
	if err := locks.Refresh(ctx, first, time.Minute); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("expired holder refreshed: %v", err)
	}
	prev := second.Fence
	for range 20 {
		if err := locks.Release(ctx, second); err != nil {
			t.Fatal(err)
		}
		if second, err = locks.Acquire(ctx, "infra/dev", runner.Holder{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if second.Fence <= prev {
			t.Fatalf("fence not strictly rising: %d after %d", second.Fence, prev)
		}
		prev = second.Fence
	}
}

func TestLocksAreIndependentPerEnvironment(t *testing.T) {
	locks, _ := newLocks(t)
	ctx := context.Background()
	for _, key := range []string{"infra/staging", "infra/prod", "network/staging"} {
		if _, err := locks.Acquire(ctx, key, runner.Holder{}, time.Minute); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
}

func TestTakeoverAndForceRelease(t *testing.T) {
	locks, _ := newLocks(t)
	ctx := context.Background()
	old, err := locks.Acquire(ctx, "infra/staging", runner.Holder{User: "UA", PR: 42}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	next, err := locks.Takeover(ctx, old, runner.Holder{User: "UB", PR: 42}, time.Minute)
	if err != nil || next.Fence <= old.Fence || next.Owner == old.Owner {
		t.Fatalf("takeover: %+v %v", next, err)
	}
	if err := locks.Refresh(ctx, old, time.Minute); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("old lease still refreshes after takeover: %v", err)
	}
	if _, err := locks.Takeover(ctx, old, runner.Holder{}, time.Minute); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("takeover by a lost lease: %v", err)
	}
	h, held, err := locks.ForceRelease(ctx, "infra/staging")
	if err != nil || !held || h.User != "UB" || h.Fence != next.Fence {
		t.Fatalf("force release: %+v %v %v", h, held, err)
	}
	if _, held, _ := locks.Holder(ctx, "infra/staging"); held {
		t.Fatal("still held after force release")
	}
	if _, held, err := locks.ForceRelease(ctx, "infra/staging"); held || err != nil {
		t.Fatalf("force release of a free lock: %v %v", held, err)
	}
}

func TestFencedWritesRejectStaleHolders(t *testing.T) {
	locks, _ := newLocks(t)
	ctx := context.Background()
	first, err := locks.Acquire(ctx, "infra/prod", runner.Holder{}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Fenced(ctx, first, []byte("first enters")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // first's lease runs out, as if it were paused
	second, err := locks.Acquire(ctx, "infra/prod", runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Fenced(ctx, second, []byte("second enters")); err != nil {
		t.Fatal(err)
	}
	if err := locks.Fenced(ctx, first, []byte("first writes late")); !errors.Is(err, runner.ErrLockLost) {
		t.Fatalf("stale holder's write: %v", err)
	}
	// Even a holder whose owner token matches cannot write behind a newer fence.
	behind := second
	behind.Fence = first.Fence
	if err := locks.Fenced(ctx, behind, []byte("old fence")); !errors.Is(err, runner.ErrStaleFence) {
		t.Fatalf("write with an older fence: %v", err)
	}
	recs, err := locks.Ledger(ctx, "infra/prod", 10)
	if err != nil || len(recs) != 2 || string(recs[0]) != "first enters" || string(recs[1]) != "second enters" {
		t.Fatalf("ledger = %q %v", recs, err)
	}
}

// WithPools puts the pool's name in every key of a lock, for per-pool Redis
// ACL users.
func TestLockKeysNameThePool(t *testing.T) {
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	l := New(rdb, "t:", WithPools(func(key string) string { return map[string]string{"infra/prod": "prod"}[key] }))
	lease, err := l.Acquire(ctx, "infra/prod", runner.Holder{User: "U"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Fenced(ctx, lease, []byte("rec")); err != nil {
		t.Fatal(err)
	}
	keys := rdb.Keys(ctx, "t:*").Val()
	slices.Sort(keys)
	want := []string{"t:fence:prod:{infra/prod}", "t:ledger:prod:{infra/prod}", "t:ledgerfence:prod:{infra/prod}",
		"t:lock:prod:{infra/prod}", "t:lockmeta:prod:{infra/prod}"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
}
