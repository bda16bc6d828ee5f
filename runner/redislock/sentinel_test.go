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

// TestSentinelFailoverKeepsAcknowledgedWrites plays a Sentinel failover
// that comes while the replica lags: a lock and a fenced apply_start that
// only the master held are gone once the replica is promoted. Persistence
// does not help (both servers have appendfsync always); replication is
// asynchronous. Without WAIT, both were acknowledged and lost. With WithReplicaWait a write no replica acknowledged is
// reported as failed, so no holder goes on believing in a lock or a
// ledger record that the new master never had, and a write the replica
// acknowledged survives the failover.
func TestSentinelFailoverKeepsAcknowledgedWrites(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	s, err := devstack.StartRedisSentinel(ctx, devstack.SentinelOptions{Dir: t.TempDir(), MasterArgs: durable,
		ReplicaArgs: [][]string{durable}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.Name, SentinelAddrs: s.Addrs(),
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1})
	defer rdb.Close()
	locks := New(rdb, "twokey:", WithReplicaWait(500*time.Millisecond))
	// With the replica in step, a replica on a loaded machine (fsync on
	// every write) may take longer than that to acknowledge: what is
	// tested there is that acknowledged writes go through.
	steady := New(rdb, "twokey:", WithReplicaWait(10*time.Second))
	link := s.Links[0]

	// Alice's plan takes prod while the replica is in step: acknowledged.
	alice, err := steady.Acquire(ctx, "infra/prod", runner.Holder{User: "UALICE", PR: 1}, time.Hour)
	if err != nil {
		t.Fatalf("acquire with the replica in step: %v", err)
	}

	if err := steady.Refresh(ctx, alice, time.Hour); err != nil {
		t.Fatalf("refresh with the replica in step: %v", err)
	}
	// Every other write, with the replica in step, as usual.
	dev, err := steady.Acquire(ctx, "infra/dev", runner.Holder{User: "UERIN", PR: 5}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if dev, err = steady.Takeover(ctx, dev, runner.Holder{User: "UERIN", PR: 6}, time.Hour); err != nil {
		t.Fatalf("takeover with the replica in step: %v", err)
	}
	if err := steady.Fenced(ctx, dev, []byte(`{"kind":"apply_start"}`)); err != nil {
		t.Fatalf("fenced write with the replica in step: %v", err)
	}
	if err := steady.Release(ctx, dev); err != nil {
		t.Fatal(err)
	}
	if _, held, err := steady.Holder(ctx, "infra/dev"); err != nil || held {
		t.Fatalf("infra/dev after release: held %v, %v", held, err)
	}

	// The network between master and replica drops the stream. Alice's
	// apply writes its apply_start, and Carol's plan takes staging.
	link.Partition()
	if err := locks.Refresh(ctx, alice, time.Hour); !errors.Is(err, ErrNotReplicated) || errors.Is(err, runner.ErrLockLost) {
		t.Errorf("refresh with the replica cut off: %v, want ErrNotReplicated (KeepLease retries it until the lease runs out)", err)
	}
	startErr := locks.Fenced(ctx, alice, []byte(`{"kind":"apply_start"}`))
	carol, carolErr := locks.Acquire(ctx, "infra/staging", runner.Holder{User: "UCAROL", PR: 3}, time.Hour)
	// Without the wait (as on Cluster), Frank's plan takes qa: acknowledged
	// by the master alone.
	loose := New(rdb, "twokey:")
	frank, err := loose.Acquire(ctx, "infra/qa", runner.Holder{User: "UFRANK", PR: 7}, time.Hour)
	if err != nil {
		t.Fatalf("acquire without waiting: %v", err)
	}

	// The master dies before the replica has them; Sentinel promotes it.
	oldMaster := s.Master.Addr
	s.Master.Kill()
	link.Heal()
	if _, err := s.WaitForFailover(ctx, oldMaster, 30*time.Second); err != nil {
		t.Fatalf("no failover: %v", err)
	}

	// What the new master says, retried while the client finds it (an
	// answer from Redis ends the retries).
	retry := func(f func() error) error {
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = f(); err == nil || errors.Is(err, runner.ErrLocked) || errors.Is(err, runner.ErrLockLost) {
				return err
			}
		}
		return err
	}
	bob := retry(func() error {
		_, err := New(rdb, "twokey:").Acquire(ctx, "infra/prod", runner.Holder{User: "UBOB", PR: 2}, time.Hour)
		return err
	})
	if le := (*runner.LockedError)(nil); !errors.As(bob, &le) || le.Holder.User != "UALICE" || le.Holder.Fence != alice.Fence {
		t.Errorf("Alice's acknowledged lock was lost in the failover: Bob got %v", bob)
	}
	var ledger [][]byte
	if err := retry(func() (err error) { ledger, err = locks.Ledger(ctx, "infra/prod", 10); return err }); err != nil {
		t.Fatal(err)
	}
	if startErr == nil && len(ledger) != 1 {
		t.Errorf("apply_start was acknowledged with the replica cut off, and the failover lost it (ledger %q)", ledger)
	}
	if startErr != nil && !errors.Is(startErr, ErrNotReplicated) {
		t.Errorf("apply_start with the replica cut off: %v, want ErrNotReplicated", startErr)
	}
	dave := retry(func() error {
		_, err := New(rdb, "twokey:").Acquire(ctx, "infra/staging", runner.Holder{User: "UDAVE", PR: 4}, time.Hour)
		return err
	})
	if dave != nil && !errors.As(dave, new(*runner.LockedError)) {
		t.Fatal(dave)
	}
	if carolErr == nil && dave == nil {
		t.Errorf("two holders of staging: Carol (fence %d), acknowledged with the replica cut off, and Dave after the failover", carol.Fence)
	}
	// Frank's lock is gone with the old master; what holds is that he
	// can neither write apply_start nor keep his lease, so his work stops.
	if err := retry(func() error { return loose.Fenced(ctx, frank, []byte(`{"kind":"apply_start"}`)) }); !errors.Is(err, runner.ErrLockLost) {
		t.Errorf("a holder whose lock the failover lost wrote apply_start: %v, want ErrLockLost", err)
	}
	if err := loose.Refresh(ctx, frank, time.Hour); !errors.Is(err, runner.ErrLockLost) {
		t.Errorf("a holder whose lock the failover lost refreshed it: %v, want ErrLockLost", err)
	}
	if carolErr != nil && !errors.Is(carolErr, ErrNotReplicated) {
		t.Errorf("acquire with the replica cut off: %v, want ErrNotReplicated", carolErr)
	}
}
