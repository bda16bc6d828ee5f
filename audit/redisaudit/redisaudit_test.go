package redisaudit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/attest"
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
	signer, _ := attest.GenerateSigner()
	l, rdb := newLog(t, Options{Prefix: "t:", MaxAge: time.Hour, MinAge: 30 * time.Minute,
		Signer: signer, Trust: attest.NewKeyring(signer.Public())})
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

	// Retention's anchor is a signed checkpoint: one a Redis writer sets
	// itself (to skip events it deleted) does not verify, nor does a
	// signed one younger than MinAge.
	good := rdb.Get(ctx, "t:{audit}:anchor").Val()
	var be *audit.BreakError
	for name, anchor := range map[string]string{
		"a bare hash":     "0123456789abcdef",
		"an unsigned one": `{"hash":"0123456789abcdef","time":"2020-01-01T00:00:00Z"}`,
		"a signed recent": string(mustJSON(t, checkpointOf(signer, "0123456789abcdef", now.Add(-time.Minute)))),
	} {
		rdb.Set(ctx, "t:{audit}:anchor", anchor, 0)
		if _, err := l.Verify(ctx); !errors.As(err, &be) || be.ID != "anchor" {
			t.Errorf("%s as the anchor: %v", name, err)
		}
	}
	rdb.Set(ctx, "t:{audit}:anchor", good, 0)
	if _, err := l.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

func checkpointOf(s *attest.Signer, hash string, at time.Time) checkpoint {
	c := checkpoint{Hash: hash, Time: at.UTC()}
	c.Sig = s.Sign(purposeCheckpoint, c.message())
	return c
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Events are signed by the process that wrote them. A Redis writer who
// drops an event and seals the rest again (sha256 needs no key) is caught
// at the first re-sealed event; one who cuts events off the end is caught
// by the copy in the file sink; events of a removed key stop verifying.
func TestSignedChain(t *testing.T) {
	serve, _ := attest.GenerateSigner()
	runnerKey, _ := attest.GenerateSigner()
	trust := attest.NewKeyring(serve.Public(), runnerKey.Public())
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	l, rdb := newLog(t, Options{Prefix: "t:", File: file, Signer: serve, Trust: trust})
	worker, _ := New(rdb, Options{Prefix: "t:", Signer: runnerKey, Trust: trust})
	ctx := context.Background()
	for i := range 6 {
		rec := l
		if i == 2 {
			rec = worker
		}
		if err := rec.Record(ctx, audit.Event{Type: audit.Approval, PlanID: fmt.Sprintf("p-%d", i%3)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Record(ctx, audit.Event{Type: audit.Command}); err != nil { // the file's newest event
		t.Fatal(err)
	}
	if n, err := l.Verify(ctx); err != nil || n != 7 {
		t.Fatalf("verify: %d %v", n, err)
	}
	if err := l.VerifyHead(ctx, file); err != nil {
		t.Fatal(err)
	}
	original := rdb.XRange(ctx, "t:{audit}:stream", "-", "+").Val()
	rewrite := func(keep func(i int, e audit.Event) bool, reseal bool) {
		rdb.Del(ctx, "t:{audit}:stream")
		prev := ""
		for i, m := range original {
			var e audit.Event
			_ = json.Unmarshal([]byte(m.Values["event"].(string)), &e)
			if !keep(i, e) {
				continue
			}
			if reseal {
				e.Seal(prev)
			}
			prev = e.Hash
			b, _ := json.Marshal(e)
			rdb.XAdd(ctx, &redis.XAddArgs{Stream: "t:{audit}:stream", ID: m.ID, Values: map[string]any{"event": b}})
		}
		rdb.Set(ctx, "t:{audit}:last", prev, 0)
	}

	// Drop p-1's events (1 and 4) and re-seal: event 1 of what is left is
	// the first whose signature no longer matches.
	rewrite(func(_ int, e audit.Event) bool { return e.PlanID != "p-1" }, true)
	var be *audit.BreakError
	if _, err := l.Verify(ctx); !errors.As(err, &be) || be.Index != 1 || !strings.Contains(be.Reason, "forged") {
		t.Fatalf("re-sealed chain: %v", err)
	}
	// Cut the last two events: the rest is intact and signed, but the
	// file's newest event is gone.
	rewrite(func(i int, _ audit.Event) bool { return i < len(original)-2 }, false)
	if _, err := l.Verify(ctx); err != nil {
		t.Fatalf("a cut chain is intact as far as it goes: %v", err)
	}
	if err := l.VerifyHead(ctx, file); !errors.As(err, &be) || !strings.Contains(be.Reason, "not in the chain") {
		t.Fatalf("cut chain against the file: %v", err)
	}

	// Rotation: without the runner's key its event no longer verifies.
	rewrite(func(int, audit.Event) bool { return true }, false)
	onlyServe, _ := New(rdb, Options{Prefix: "t:", Trust: attest.NewKeyring(serve.Public())})
	if _, err := onlyServe.Verify(ctx); !errors.As(err, &be) || be.Index != 2 {
		t.Fatalf("after removing the runner's key: %v", err)
	}
}

// Writers in one process take turns at the chain's head rather than race
// for it: a burst of them appends each event with one script call, and
// reads the head from Redis once, not once per attempt.
func TestWritersInOneProcessTakeTurns(t *testing.T) {
	signer, _ := attest.GenerateSigner()
	l, rdb := newLog(t, Options{Prefix: "t:", Signer: signer})
	ctx := context.Background()
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 100
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := l.Record(ctx, audit.Event{Type: audit.Command, Detail: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	calls := func(cmd string) int {
		stats := rdb.Info(ctx, "commandstats").Val()
		for _, line := range strings.Split(stats, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
				var c int
				fmt.Sscanf(rest, "%d", &c)
				return c
			}
		}
		return 0
	}
	// One call per append, plus the EVAL that loads the script the first
	// time; commandstats also counts the GET the script does.
	if got := calls("evalsha") + calls("eval"); got > n+1 {
		t.Errorf("%d appends took %d script calls", n, got)
	}
	if got := calls("get"); got > n+1 {
		t.Errorf("%d appends read the head %d times", n, got)
	}
	if got, err := l.Verify(ctx); err != nil || got != n {
		t.Fatalf("verify: %d events, %v", got, err)
	}
}
