package main

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
)

// serve refuses a Redis that could forget a lock in a restart (see
// runner/redislock's restart tests), unless told the risk is handled.
func TestCheckDurable(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"volatile", nil, `appendonly="no"`},
		{"everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, `appendfsync="everysec"`},
		{"durable", []string{"--appendonly", "yes", "--appendfsync", "always"}, ""},
	} {
		srv := stacktest.Redis(t, tt.args...)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		err := checkDurable(ctx, rdb)
		rdb.Close()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: checkDurable = %v, want %q", tt.name, err, tt.want)
		}
	}
}
