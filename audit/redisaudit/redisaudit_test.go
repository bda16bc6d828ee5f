package redisaudit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/devstack/stacktest"
)

func newLog(t *testing.T, o Options) (*Log, *redis.Client) {
	t.Helper()
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	l, err := New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, rdb
}

func TestConcurrentWritersKeepOneChain(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	l, rdb := newLog(t, Options{Prefix: "t:", File: file})
	other, _ := New(rdb, Options{Prefix: "t:"}) // a second bot process
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rec := l
			if w%2 == 1 {
				rec = other
			}
			for i := range 25 {
				if err := rec.Record(ctx, audit.Event{Type: audit.Approval, Actor: audit.Actor{ID: fmt.Sprintf("U%d", w)},
					Detail: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	n, err := l.Verify(ctx)
	if err != nil || n != 200 {
		t.Fatalf("verify: %d events, %v", n, err)
	}
	f, _ := os.Open(file)
	defer f.Close()
	lines := 0
	for s := bufio.NewScanner(f); s.Scan(); lines++ {
		var e audit.Event
		if err := json.Unmarshal(s.Bytes(), &e); err != nil || e.Hash == "" {
			t.Fatalf("bad line %q", s.Text())
		}
	}
	if lines != 100 { // the half written by l
		t.Fatalf("file sink has %d lines, want 100", lines)
	}
}

func record(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		if err := l.Record(context.Background(), audit.Event{Type: audit.Command, Actor: audit.Actor{ID: "UA"},
			Detail: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTamperingIsFound(t *testing.T) {
	ctx := context.Background()
	t.Run("edited", func(t *testing.T) {
		l, rdb := newLog(t, Options{Prefix: "t:"})
		record(t, l, 5)
		msgs := rdb.XRange(ctx, "t:{audit}:stream", "-", "+").Val()
		// Rewrite the stream with event 2 edited, keeping every ID.
		rdb.Del(ctx, "t:{audit}:stream")
		for i, m := range msgs {
			raw := m.Values["event"].(string)
			if i == 2 {
				var e audit.Event
				_ = json.Unmarshal([]byte(raw), &e)
				e.Actor.ID = "UMALLORY"
				b, _ := json.Marshal(e)
				raw = string(b)
			}
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: "t:{audit}:stream", ID: m.ID, Values: map[string]any{"event": raw}})
		}
		_, err := l.Verify(ctx)
		var be *audit.BreakError
		if !errors.As(err, &be) || be.Index != 2 || be.ID != msgs[2].ID {
			t.Fatalf("verify = %v, want a break at event 2 (%s)", err, msgs[2].ID)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		l, rdb := newLog(t, Options{Prefix: "t:"})
		record(t, l, 5)
		msgs := rdb.XRange(ctx, "t:{audit}:stream", "-", "+").Val()
		rdb.XDel(ctx, "t:{audit}:stream", msgs[3].ID)
		_, err := l.Verify(ctx)
		var be *audit.BreakError
		if !errors.As(err, &be) || be.Index != 3 || be.ID != msgs[4].ID {
			t.Fatalf("verify = %v, want a break at the event after the deleted one", err)
		}
	})
	t.Run("newest deleted", func(t *testing.T) {
		l, rdb := newLog(t, Options{Prefix: "t:"})
		record(t, l, 3)
		msgs := rdb.XRange(ctx, "t:{audit}:stream", "-", "+").Val()
		rdb.XDel(ctx, "t:{audit}:stream", msgs[2].ID)
		if _, err := l.Verify(ctx); err == nil {
			t.Fatal("deleting the newest event went unnoticed")
		}
	})
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	l, rdb := newLog(t, Options{Prefix: "t:", MaxAge: time.Hour, MinAge: 30 * time.Minute})
	now := time.Now()
	for _, age := range []time.Duration{3 * time.Hour, 2 * time.Hour, 45 * time.Minute, 10 * time.Minute} {
		// Events are ordered by ID, which is the time they are written:
		// write "old" ones by writing them first and moving the clock.
		l.clock = func() time.Time { return now.Add(-age) }
		record(t, l, 1)
	}
	// Stream IDs follow Redis's clock, not ours: rewrite them to the ages.
	msgs := rdb.XRange(ctx, "t:{audit}:stream", "-", "+").Val()
	rdb.Del(ctx, "t:{audit}:stream")
	for i, m := range msgs {
		age := []time.Duration{3 * time.Hour, 2 * time.Hour, 45 * time.Minute, 10 * time.Minute}[i]
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "t:{audit}:stream", ID: fmt.Sprintf("%d-0", now.Add(-age).UnixMilli()), Values: m.Values})
	}
	l.clock = func() time.Time { return now }
	n, err := l.Trim(ctx)
	if err != nil || n != 2 {
		t.Fatalf("trimmed %d (%v), want the two older than an hour", n, err)
	}
	if left, err := l.Verify(ctx); err != nil || left != 2 {
		t.Fatalf("after trim: %d events, %v", left, err)
	}
	// A length limit never trims events younger than MinAge.
	l.o.MaxAge, l.o.MaxLen = 0, 1
	if n, _ := l.Trim(ctx); n != 1 {
		t.Fatalf("length trim removed %d, want only the one older than 30m", n)
	}
	if n, _ := l.Trim(ctx); n != 0 {
		t.Fatalf("trimmed %d events younger than the minimum age", n)
	}
	if _, err := l.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}
