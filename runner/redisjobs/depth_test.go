package redisjobs

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
)

// A pool's depth counts jobs waiting and jobs running, and its oldest is
// the oldest of either; an empty or never-used pool is zero.
func TestQueueDepth(t *testing.T) {
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	stream := streamKey("t:", "prod")
	check := func(what string, jobs int64, oldest time.Time) {
		t.Helper()
		d, err := QueueDepth(ctx, rdb, "t:", "prod")
		if err != nil {
			t.Fatal(err)
		}
		if d.Jobs != jobs || !d.Oldest.Equal(oldest) {
			t.Errorf("%s: depth %d oldest %v, want %d %v", what, d.Jobs, d.Oldest, jobs, oldest)
		}
	}
	check("never used", 0, time.Time{})

	t1, t2, t3 := time.UnixMilli(1_700_000_000_000), time.UnixMilli(1_700_000_001_000), time.UnixMilli(1_700_000_002_000)
	for _, at := range []time.Time{t1, t2, t3} {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: idAt(at), Values: map[string]any{"job": "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	check("no worker yet", 3, t1)

	if err := rdb.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	check("none taken", 3, t1)

	// A worker takes two; it finishes the first.
	got, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "w", Streams: []string{stream, ">"}, Count: 2}).Result()
	if err != nil || len(got[0].Messages) != 2 {
		t.Fatalf("read: %v %v", got, err)
	}
	check("two running", 3, t1)
	if err := rdb.XAck(ctx, stream, group, idAt(t1)).Err(); err != nil {
		t.Fatal(err)
	}
	check("one running, one waiting", 2, t2)
	if err := rdb.XAck(ctx, stream, group, idAt(t2)).Err(); err != nil {
		t.Fatal(err)
	}
	check("one waiting", 1, t3)
	if _, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "w", Streams: []string{stream, ">"}}).Result(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAck(ctx, stream, group, idAt(t3)).Err(); err != nil {
		t.Fatal(err)
	}
	check("all done", 0, time.Time{})
}

func idAt(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) + "-0" }
