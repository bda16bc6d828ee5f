// Package redisaudit keeps the audit chain in a Redis Stream. An append is a
// compare-and-swap on the chain's last hash, so events from several
// processes still form one chain; trimming keeps the hash of the last event
// it removed, as the anchor Verify starts from.
package redisaudit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
)

// Options configure a Log.
type Options struct {
	Prefix string
	// File, if set, also receives every event as a JSON line, for shipping
	// to long-term storage.
	File string
	// Retention: events older than MaxAge, or beyond the newest MaxLen, are
	// trimmed, but never one younger than MinAge. Zero disables each limit.
	MaxAge, MinAge time.Duration
	MaxLen         int64
	// Signer signs every event this process appends (audit.Event.Sign).
	Signer *attest.Signer
	// Trust, if it holds any key, makes Verify require every event to be
	// signed by one of them.
	Trust  attest.Keyring
	Logger *slog.Logger
}

// Log is an audit.Recorder on Redis.
type Log struct {
	rdb redis.UniversalClient
	o   Options
	// appending serializes this process's appends: writers in one process
	// take turns rather than race for the chain's head, and the head this
	// process appended last is the one it seals after next (last, when
	// known), which is re-read only when another process appended since.
	appending sync.Mutex
	last      *string
	mu        sync.Mutex // serializes writes to the file sink
	file      *os.File
	keys      []string // stream, last hash, anchor: one hash tag, for Cluster
	clock     func() time.Time
}

var _ audit.Recorder = (*Log)(nil)

// New returns a Log; Close it to close the file sink.
func New(rdb redis.UniversalClient, o Options) (*Log, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{rdb: rdb, o: o, clock: time.Now,
		keys: []string{o.Prefix + "{audit}:stream", o.Prefix + "{audit}:last", o.Prefix + "{audit}:anchor"}}
	if o.File != "" {
		f, err := os.OpenFile(o.File, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit file: %w", err)
		}
		l.file = f
	}
	return l, nil
}

// Close closes the file sink.
func (l *Log) Close() error {
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

// appendScript adds ARGV[3] (an event sealed after ARGV[1]) if ARGV[1] is
// still the chain's last hash, and makes ARGV[2] the last hash.
var appendScript = redis.NewScript(`
local last = redis.call('GET', KEYS[2]) or ''
if last ~= ARGV[1] then return false end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return id
`)

// maxAttempts bounds retries when other processes append at the same time.
const maxAttempts = 200

// Record appends e to the chain.
func (l *Log) Record(ctx context.Context, e audit.Event) error {
	if e.Time.IsZero() {
		e.Time = l.clock()
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	l.appending.Lock()
	defer l.appending.Unlock()
	for range maxAttempts {
		if l.last == nil {
			last, err := l.rdb.Get(ctx, l.keys[1]).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("audit: %w", err)
			}
			l.last = &last
		}
		last := *l.last
		e.Seal(last)
		if l.o.Signer != nil {
			e.Sign(l.o.Signer)
		}
		body, err := json.Marshal(e)
		if err != nil {
			return err
		}
		id, err := appendScript.Run(ctx, l.rdb, l.keys, last, e.Hash, body).Text()
		if err != nil {
			l.last = nil // read the head again
		}
		if errors.Is(err, redis.Nil) {
			// Another writer appended first: seal again after it, after a
			// moment, so that contending writers spread out.
			select {
			case <-ctx.Done():
				return fmt.Errorf("audit: %w", ctx.Err())
			case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		e.ID = id
		l.last = &e.Hash
		l.sink(e)
		return nil
	}
	return fmt.Errorf("audit: gave up appending after %d conflicts", maxAttempts)
}

func (l *Log) sink(e audit.Event) {
	if l.file == nil {
		return
	}
	b, _ := json.Marshal(e)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.file.Write(append(b, '\n')); err != nil {
		l.o.Logger.Error("audit file sink", "err", err)
	}
}

// Since returns the events from since on, oldest first.
func (l *Log) Since(ctx context.Context, since time.Time) ([]audit.Event, error) {
	start := "-"
	if !since.IsZero() {
		start = strconv.FormatInt(since.UnixMilli(), 10)
	}
	return l.rangeEvents(ctx, start, "+")
}

func (l *Log) rangeEvents(ctx context.Context, start, end string) ([]audit.Event, error) {
	msgs, err := l.rdb.XRange(ctx, l.keys[0], start, end).Result()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	out := make([]audit.Event, 0, len(msgs))
	for _, m := range msgs {
		var e audit.Event
		raw, _ := m.Values["event"].(string)
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			e = audit.Event{Type: "unreadable", Prev: "?", Hash: "?"}
		}
		e.ID = m.ID
		out = append(out, e)
	}
	return out, nil
}

// Newest returns up to n of the newest events that match, newest first,
// reading back at most scan events.
func (l *Log) Newest(ctx context.Context, n, scan int, match func(audit.Event) bool) ([]audit.Event, error) {
	msgs, err := l.rdb.XRevRangeN(ctx, l.keys[0], "+", "-", int64(scan)).Result()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []audit.Event
	for _, m := range msgs {
		var e audit.Event
		raw, _ := m.Values["event"].(string)
		if json.Unmarshal([]byte(raw), &e) != nil || !match(e) {
			continue
		}
		e.ID = m.ID
		out = append(out, e)
		if len(out) == n {
			break
		}
	}
	return out, nil
}

// Verify checks the whole stored chain from its anchor and returns how many
// events it checked.
func (l *Log) Verify(ctx context.Context) (int, error) {
	raw, err := l.rdb.Get(ctx, l.keys[2]).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("audit: %w", err)
	}
	events, err := l.rangeEvents(ctx, "-", "+")
	if err != nil {
		return 0, err
	}
	var trust *attest.Keyring
	if l.o.Trust.Len() > 0 {
		trust = &l.o.Trust
	}
	anchor, err := l.checkpoint(raw, trust)
	if err != nil {
		return 0, err
	}
	if err := audit.VerifySigned(anchor, events, trust); err != nil {
		return len(events), err
	}
	last, err := l.rdb.Get(ctx, l.keys[1]).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return len(events), fmt.Errorf("audit: %w", err)
	}
	if n := len(events); n > 0 && events[n-1].Hash != last || n == 0 && last != anchor {
		return n, &audit.BreakError{Index: n, ID: "end", Reason: "the newest events are missing (the chain's last hash is not the last event's)"}
	}
	return len(events), nil
}

// trimScript removes the entries up to and including ARGV[1] (a stream ID)
// and records ARGV[2], the signed checkpoint of the last of them, as the
// anchor.
var trimScript = redis.NewScript(`
local old = redis.call('XRANGE', KEYS[1], '-', ARGV[1])
if #old == 0 then return 0 end
for _, m in ipairs(old) do redis.call('XDEL', KEYS[1], m[1]) end
redis.call('SET', KEYS[3], ARGV[2])
return #old
`)

// checkpoint is the anchor retention leaves: the hash and time of the last
// event it removed, signed by the process that removed it. A Redis writer
// who deletes events and sets the anchor to skip them cannot sign it, and
// cannot reuse an old one without breaking the chain after it.
type checkpoint struct {
	Hash string           `json:"hash"`
	Time time.Time        `json:"time"`
	Sig  attest.Signature `json:"sig"`
}

const purposeCheckpoint = "audit checkpoint"

func (c checkpoint) message() []byte {
	return []byte(c.Hash + "\x00" + c.Time.UTC().Format(time.RFC3339Nano))
}

// checkpoint reads the anchor the chain starts from and checks it: with
// trusted keys, signed by one of them, and of an event retention was
// allowed to remove (older than MinAge now).
func (l *Log) checkpoint(raw string, trust *attest.Keyring) (string, error) {
	if raw == "" {
		return "", nil
	}
	var c checkpoint
	if err := json.Unmarshal([]byte(raw), &c); err != nil || c.Hash == "" {
		if trust != nil {
			return "", &audit.BreakError{Index: 0, ID: "anchor", Reason: "the chain's anchor is not a signed checkpoint: events before it were removed by something other than retention"}
		}
		return raw, nil // an anchor from before checkpoints were signed
	}
	if trust != nil {
		if err := trust.Verify(purposeCheckpoint, c.message(), c.Sig); err != nil {
			return "", &audit.BreakError{Index: 0, ID: "anchor", Reason: fmt.Sprintf("the chain's anchor is not signed by a trusted key (%v): events were removed and the anchor forged", err)}
		}
	}
	if l.o.MinAge > 0 && c.Time.After(l.clock().Add(-l.o.MinAge)) {
		return "", &audit.BreakError{Index: 0, ID: "anchor", Reason: fmt.Sprintf("events up to %s were removed, but retention keeps %v", c.Time.UTC().Format(time.RFC3339), l.o.MinAge)}
	}
	return c.Hash, nil
}

// Trim applies the retention: it drops events older than MaxAge and the
// oldest beyond MaxLen, but never one younger than MinAge.
func (l *Log) Trim(ctx context.Context) (int, error) {
	now := l.clock()
	cut := time.Time{}
	if l.o.MaxAge > 0 {
		cut = now.Add(-l.o.MaxAge)
	}
	if l.o.MaxLen > 0 {
		n, err := l.rdb.XLen(ctx, l.keys[0]).Result()
		if err != nil {
			return 0, fmt.Errorf("audit: %w", err)
		}
		if n > l.o.MaxLen {
			msgs, err := l.rdb.XRangeN(ctx, l.keys[0], "-", "+", n-l.o.MaxLen+1).Result()
			if err == nil && len(msgs) > 0 {
				if t := idTime(msgs[len(msgs)-1].ID); t.After(cut) {
					cut = t
				}
			}
		}
	}
	if cut.IsZero() {
		return 0, nil
	}
	if floor := now.Add(-l.o.MinAge); l.o.MinAge > 0 && cut.After(floor) {
		cut = floor // never trim what is younger than the minimum
	}
	old, err := l.rangeEvents(ctx, "-", "("+strconv.FormatInt(cut.UnixMilli(), 10))
	if err != nil || len(old) == 0 {
		return 0, err
	}
	last := old[len(old)-1]
	c := checkpoint{Hash: last.Hash, Time: last.Time.UTC()}
	if l.o.Signer != nil {
		c.Sig = l.o.Signer.Sign(purposeCheckpoint, c.message())
	}
	body, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	n, err := trimScript.Run(ctx, l.rdb, l.keys, last.ID, body).Int()
	if err != nil {
		return 0, fmt.Errorf("audit trim: %w", err)
	}
	return n, nil
}

func idTime(id string) time.Time {
	ms, err := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// VerifyHead checks the chain against a copy kept outside Redis: the newest
// event in a file sink (Options.File, one JSON event a line) must be in the
// stream, or events were cut from the end (or the stream replaced). Events
// trimmed by retention are older than what the file's last line records,
// so they do not matter here.
func (l *Log) VerifyHead(ctx context.Context, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return nil // this process wrote nothing yet
	}
	var head audit.Event
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &head); err != nil {
		return fmt.Errorf("audit head %s: unreadable last line: %w", file, err)
	}
	events, err := l.rangeEvents(ctx, "-", "+")
	if err != nil {
		return err
	}
	for _, e := range events {
		if e.Hash == head.Hash {
			return nil
		}
	}
	return &audit.BreakError{Index: len(events), ID: head.ID, Reason: fmt.Sprintf(
		"the newest event %s recorded (%s, %s, hash %.12s) is not in the chain: events were cut from its end or the stream was replaced",
		file, head.Type, head.Time.UTC().Format(time.RFC3339), head.Hash)}
}
