package main

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

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
		err := checkDurable(ctx, rdb, tt.asserted)
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
	if err := checkDurable(context.Background(), rdb, true); err == nil {
		t.Fatal("checkDurable passed with Redis unreachable")
	}
}
