package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
)

// serve refuses a Redis that could forget a lock in a restart (see
// runner/redislock's restart tests), unless told the risk is handled. A
// managed service that refuses CONFIG (ElastiCache, MemoryDB, Memorystore,
// Azure Cache) is taken at the operator's word with durability "asserted";
// a CONFIG GET that answers still has to show every write persisted.
func TestCheckDurable(t *testing.T) {
	ctx := context.Background()
	// Managed services refuse CONFIG; a renamed command answers the same way.
	noConfig := []string{"--rename-command", "CONFIG", ""}
	for _, tt := range []struct {
		name     string
		args     []string
		asserted bool
		want     string
	}{
		{"volatile", nil, false, `appendonly="no"`},
		{"everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, false, `appendfsync="everysec"`},
		{"durable", []string{"--appendonly", "yes", "--appendfsync", "always"}, false, ""},
		{"managed, strict", noConfig, false, "set redis.durability: asserted"},
		{"managed, asserted", noConfig, true, ""},
		{"asserted but CONFIG shows volatile", nil, true, `appendonly="no"`},
		{"asserted but CONFIG shows everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, true, `appendfsync="everysec"`},
		{"asserted and durable", []string{"--appendonly", "yes", "--appendfsync", "always"}, true, ""},
	} {
		srv := stacktest.Redis(t, tt.args...)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		c := config.Redis{URL: srv.URL()}
		if tt.asserted {
			c.Durability = "asserted"
		}
		err := checkDurable(ctx, rdb, c, "")
		rdb.Close()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: checkDurable = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// asserted does not turn an unreachable Redis into a durable one.
func TestCheckDurableAssertedUnreachable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	if err := checkDurable(context.Background(), rdb, config.Redis{URL: "redis://127.0.0.1:1/0", Durability: "asserted"}, ""); err == nil {
		t.Fatal("checkDurable passed with Redis unreachable")
	}
}

// TestSentinelDurabilityChecksReplicas plays the operator whose Sentinel
// master persists every write but whose replica does not: the replica is
// what Sentinel promotes when the master fails, and after a restart of
// the promoted replica the locks are gone. serve in strict mode asks the
// Sentinels for the master's replicas, refuses to start and names the
// replica; with the replica persisting too it starts. A replica with
// replica-priority 0 is never promoted, and is not asked.
func TestSentinelDurabilityChecksReplicas(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	s, err := devstack.StartRedisSentinel(ctx, devstack.SentinelOptions{Dir: t.TempDir(), MasterArgs: durable,
		ReplicaArgs: [][]string{{"--appendonly", "no"}, {"--appendonly", "no", "--replica-priority", "0"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	open := func() error {
		rdb, err := openRedis(ctx, config.Redis{URL: "redis://127.0.0.1:6379/0",
			Sentinel: config.RedisSentinel{Master: s.Name, Addrs: s.Addrs()}}, "")
		if err == nil {
			rdb.Close()
		}
		return err
	}
	replica, never := s.Replicas[0], s.Replicas[1]
	err = open()
	if err == nil || !strings.Contains(err.Error(), "replica "+replica.Addr) || !strings.Contains(err.Error(), `appendonly="no"`) {
		t.Fatalf("the replica %s does not persist, but serve started with %v; want a refusal naming it", replica.Addr, err)
	}
	if strings.Contains(err.Error(), never.Addr) {
		t.Errorf("a replica with replica-priority 0, which Sentinel never promotes, was refused: %v", err)
	}
	t.Logf("refused: %v", err)
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rc.Close()
	if err := rc.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := open(); err != nil {
		t.Fatalf("master and replica persist every write, but serve refused: %v", err)
	}
	// The master is still checked.
	mc := redis.NewClient(&redis.Options{Addr: s.Master.Addr})
	defer mc.Close()
	if err := mc.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	if err := open(); err == nil || !strings.Contains(err.Error(), `appendfsync="everysec"`) {
		t.Fatalf("the master fsyncs every second, but serve started with %v", err)
	}
	if err := mc.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	// A replica that is down cannot be checked, and could be promoted
	// once it is back: refused too.
	if err := replica.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := open(); err == nil || !strings.Contains(err.Error(), "replica "+replica.Addr) {
		t.Fatalf("a replica is down, but serve started with %v", err)
	}
}

// A Sentinel master without a replica Sentinel could promote is refused at
// start: lock and fence writes wait for a replica (WAIT), so every one of
// them would fail.
func TestSentinelDurabilityNeedsAReplica(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	s, err := devstack.StartRedisSentinel(ctx, devstack.SentinelOptions{Dir: t.TempDir(), MasterArgs: durable})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	rdb, err := openRedis(ctx, config.Redis{URL: "redis://127.0.0.1:6379/0",
		Sentinel: config.RedisSentinel{Master: s.Name, Addrs: s.Addrs()}}, "")
	if err == nil {
		rdb.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "no replica") {
		t.Fatalf("serve started on a Sentinel master without a replica: %v", err)
	}
}

// A Cluster master that holds slots without a replica is refused at start,
// by its address: every lock and fence write of its slots would wait in vain.
func TestClusterDurabilityNeedsAReplica(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	cluster := stacktest.RedisCluster(t, devstack.RedisClusterOptions{Masters: 3,
		NodeArgs: func(int) []string { return durable }})
	rdb, err := openRedis(ctx, config.Redis{URL: "redis://127.0.0.1:6379/0", Cluster: config.RedisCluster{Addrs: cluster.Addrs()[:1]}}, "")
	if err == nil {
		rdb.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "no replica") || !strings.Contains(err.Error(), cluster.Addrs()[2]) {
		t.Fatalf("serve started on a Cluster whose masters have no replica: %v", err)
	}
}

// A replica the cluster marks failing acknowledges no write: its master
// counts as having none. One that only may not be promoted still does.
func TestClusterReplicaMarkedFailingIsNone(t *testing.T) {
	const nodes = `07c3 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383
1a2b 127.0.0.1:7001@17001 slave%s 07c3 0 0 1 %s
`
	for _, c := range []struct {
		flags, link string
		ok          bool
	}{
		{"", "connected", true},
		{",nofailover", "connected", true},
		{",fail?", "connected", false},
		{",fail", "disconnected", false},
	} {
		_, err := parseClusterNodes(fmt.Sprintf(nodes, c.flags, c.link))
		if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "127.0.0.1:7000 has no replica") {
			t.Errorf("replica flagged slave%s: %v", c.flags, err)
		}
	}
}
