package redislock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// TestClusterWritesWaitForTheirShardsReplica: on a Redis Cluster a lock or
// fence write waits for a replica of the master that holds the lock's
// slot, on the connection that wrote. With that replica stopped, writes to
// the lock are refused (ErrNotReplicated: a failover then would lose them)
// while another shard's go through; a WAIT sent to any other master would
// have found its replica in step and let them through, and without the
// wait they were acknowledged by the master alone. The first write after a
// failover the client has not learnt of yet goes to the new master, and a
// lock acknowledged with the replica in step survives its master's death,
// at the same fence.
func TestClusterWritesWaitForTheirShardsReplica(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	cluster := stacktest.RedisCluster(t, devstack.RedisClusterOptions{Masters: 3, Replicas: 1,
		NodeArgs: func(int) []string { return durable }})
	// As serve's client (openRedis): the slots' masters learnt again every
	// 2 seconds at the most.
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ClusterStateReloadInterval: 2 * time.Second,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1})
	defer rdb.Close()
	locks := New(rdb, "twokey:", WithReplicaWait(500*time.Millisecond))
	// A replica fsyncing every write on a loaded machine may take longer
	// than that: what is tested with it is that acknowledged writes go
	// through.
	steady := New(rdb, "twokey:", WithReplicaWait(10*time.Second))

	// prod's shard: its master and replica; and a lock on another shard.
	master, replica := shardOf(t, rdb, cluster, locks.keys("infra/prod")[0])
	other := ""
	for i := 0; other == ""; i++ {
		key := fmt.Sprintf("infra/env-%d", i)
		if m, _ := shardOf(t, rdb, cluster, locks.keys(key)[0]); m != master {
			other = key
		}
	}

	alice, err := steady.Acquire(ctx, "infra/prod", runner.Holder{User: "UALICE", PR: 1}, time.Hour)
	if err != nil {
		t.Fatalf("acquire with the replica in step: %v", err)
	}
	erin, err := steady.Acquire(ctx, other, runner.Holder{User: "UERIN", PR: 5}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// prod's replica stops taking the master's stream.
	if err := replica.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := locks.Refresh(ctx, alice, time.Hour); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("refresh of prod with its shard's replica stopped: %v, want ErrNotReplicated", err)
	}
	if err := locks.Fenced(ctx, alice, []byte(`{"kind":"apply_start"}`)); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("apply_start of prod with its shard's replica stopped: %v, want ErrNotReplicated", err)
	}
	if err := locks.Refresh(ctx, erin, time.Hour); err != nil {
		t.Errorf("refresh of %s, whose shard's replica is in step: %v", other, err)
	}
	if err := locks.Fenced(ctx, erin, []byte(`{"kind":"apply_start"}`)); err != nil {
		t.Errorf("apply_start of %s, whose shard's replica is in step: %v", other, err)
	}
	if err := replica.Resume(); err != nil {
		t.Fatal(err)
	}

	// In step again. A client that learnt the slots before any of what
	// follows, and would not learn them again for an hour by itself.
	if err := steady.Refresh(ctx, alice, time.Hour); err != nil {
		t.Fatalf("refresh with the replica in step again: %v", err)
	}
	stale := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ClusterStateReloadInterval: time.Hour,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1})
	defer stale.Close()
	late := New(stale, "twokey:", WithReplicaWait(10*time.Second))
	if _, _, err := late.Holder(ctx, "infra/prod"); err != nil {
		t.Fatal(err)
	}

	// An operator fails prod's master over to its replica: the old master
	// answers MOVED. The first write after it goes to the new master.
	failover(t, replica)
	if err := late.Refresh(ctx, alice, time.Hour); err != nil {
		t.Errorf("the first refresh after a failover the client had not learnt of: %v", err)
	}

	// Then the new master dies, and the Cluster promotes the old one back.
	// The client, which learnt the slots again after that MOVED, does not
	// know: its write goes to the dead master first.
	master, replica = replica, master
	master.Kill()
	promoted(t, replica)
	// It has no replica left to wait for: the write reached it, and is
	// refused for that.
	if err := New(stale, "twokey:", WithReplicaWait(500*time.Millisecond)).Fenced(ctx, alice, []byte(`{"kind":"apply_start"}`)); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("the first write after a master died and its replica took over: %v, want ErrNotReplicated", err)
	}
	var bob error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, bob = New(rdb, "twokey:").Acquire(ctx, "infra/prod", runner.Holder{User: "UBOB", PR: 2}, time.Hour); bob == nil ||
			errors.Is(bob, runner.ErrLocked) {
			break
		}
	}
	if le := (*runner.LockedError)(nil); !errors.As(bob, &le) || le.Holder.User != "UALICE" || le.Holder.Fence != alice.Fence {
		t.Errorf("Alice's acknowledged lock was lost in the failovers: Bob got %v", bob)
	}
}

// failover has replica take its master's place, as CLUSTER FAILOVER does,
// and waits until it has.
func failover(t *testing.T, replica *devstack.Redis) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer c.Close()
	if err := c.Do(context.Background(), "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatal(err)
	}
	promoted(t, replica)
}

// promoted waits until replica is a master.
func promoted(t *testing.T, replica *devstack.Redis) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if role, err := c.Do(context.Background(), "ROLE").Slice(); err == nil && role[0] == "master" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not promoted", replica.Addr)
		}
	}
}

// shardOf returns the nodes that are the master and the replica of key's
// slot.
func shardOf(t *testing.T, rdb *redis.ClusterClient, c *devstack.RedisCluster, key string) (master, replica *devstack.Redis) {
	t.Helper()
	ctx := context.Background()
	m, err := rdb.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n.Addr == m.Options().Addr {
			master = n
		}
	}
	for _, n := range c.Nodes {
		node := redis.NewClient(&redis.Options{Addr: n.Addr})
		role, err := node.Do(ctx, "ROLE").Slice()
		node.Close()
		if err == nil && role[0] == "slave" && master != nil && fmt.Sprintf("%v:%v", role[1], role[2]) == master.Addr {
			replica = n
		}
	}
	if master == nil || replica == nil {
		t.Fatalf("no master and replica of %s among %v", key, c.Addrs())
	}
	return master, replica
}

// TestClusterReshardOfALock moves a held lock's slot to another master, as
// `redis-cli --cluster reshard` does, under a client that has not learnt of
// it. While the slot is between the two masters the lock's writes fail:
// none is acknowledged. Once the slot has moved they go to its new master
// and wait for that master's replica, and the ledger has every record.
func TestClusterReshardOfALock(t *testing.T) {
	ctx := context.Background()
	cluster := stacktest.RedisCluster(t, devstack.RedisClusterOptions{Masters: 3, Replicas: 1})
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ClusterStateReloadInterval: time.Hour,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1})
	defer rdb.Close()
	locks := New(rdb, "twokey:", WithReplicaWait(10*time.Second))
	alice, err := locks.Acquire(ctx, "infra/prod", runner.Holder{User: "UALICE", PR: 1}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Fenced(ctx, alice, []byte("before")); err != nil {
		t.Fatal(err)
	}
	key := locks.keys("infra/prod")[0]
	src, _ := shardOf(t, rdb, cluster, key)
	var dst *devstack.Redis
	for i := 0; dst == nil; i++ {
		if m, _ := shardOf(t, rdb, cluster, locks.keys(fmt.Sprintf("infra/env-%d", i))[0]); m != src {
			dst = m
		}
	}
	run := func(node *devstack.Redis, args ...any) any {
		t.Helper()
		c := redis.NewClient(&redis.Options{Addr: node.Addr})
		defer c.Close()
		v, err := c.Do(ctx, args...).Result()
		if err != nil {
			t.Fatalf("%s %v: %v", node.Addr, args, err)
		}
		return v
	}
	slot := rdb.ClusterKeySlot(ctx, key).Val()
	srcID, dstID := run(src, "CLUSTER", "MYID"), run(dst, "CLUSTER", "MYID")
	run(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
	run(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
	host, port, _ := strings.Cut(dst.Addr, ":")
	run(src, append([]any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}, run(src, "CLUSTER", "GETKEYSINSLOT", slot, 100).([]any)...)...)
	if err := locks.Refresh(ctx, alice, time.Hour); err == nil {
		t.Error("a refresh was acknowledged while its slot was between two masters")
	}
	for _, n := range []*devstack.Redis{dst, src} {
		run(n, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	}
	if err := locks.Refresh(ctx, alice, time.Hour); err != nil {
		t.Errorf("the first refresh after the slot moved: %v", err)
	}
	if err := locks.Fenced(ctx, alice, []byte("after")); err != nil {
		t.Errorf("the first fenced write after the slot moved: %v", err)
	}
	if ledger, err := locks.Ledger(ctx, "infra/prod", 10); err != nil || len(ledger) != 2 {
		t.Errorf("ledger after the reshard: %q, %v", ledger, err)
	}
}
