// Package redislock is runner.Locker on Redis: one Lua script takes the lock
// with SET NX PX and increments the fencing counter in the same step;
// refresh and release compare the owner token first and never take a lock
// that is not held.
package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/runner"
)

// ErrNotReplicated: no replica acknowledged a lock or fence write in time
// (see WithReplicaWait). The write may be on the master alone, where a
// failover can lose it, so it does not count as done.
var ErrNotReplicated = errors.New("no replica acknowledged the write in time")

// Locks is a runner.Locker.
type Locks struct {
	rdb       redis.UniversalClient
	prefix    string
	ledgerLen int
	pool      func(key string) string
	wait      time.Duration // > 0: lock and fence writes WAIT for a replica
}

// Option configures Locks.
type Option func(*Locks)

// WithLedgerLength keeps n records per ledger instead of LedgerLength.
func WithLedgerLength(n int) Option { return func(l *Locks) { l.ledgerLen = n } }

// WithPools puts the name of a lock's runner pool in its keys
// (lock:<pool>:{project/env}), so that a Redis ACL user per pool can be
// limited to its own environments' locks and ledgers. pool maps a lock key
// to its pool; every process must use the same mapping.
func WithPools(pool func(key string) string) Option { return func(l *Locks) { l.pool = pool } }

// WithReplicaWait makes every write that takes, extends or hands over a
// lock, and every fenced ledger write, wait for one replica to acknowledge
// it (WAIT 1, on the connection that wrote) for at most timeout. A write no
// replica acknowledged in time fails with ErrNotReplicated, so a failover
// does not forget a lock or a fenced record that twokey was told was
// written, unless it promotes a replica other than one that acknowledged
// it. For Sentinel (a single-master client) and Cluster, where the wait is
// on the master of the lock's slot; on a Redis without replicas every such
// write fails. Releases do not wait: a lost release only keeps a lock until
// its lease runs out.
func WithReplicaWait(timeout time.Duration) Option { return func(l *Locks) { l.wait = timeout } }

// New returns locks stored under prefix (e.g. "twokey:").
func New(rdb redis.UniversalClient, prefix string, opts ...Option) *Locks {
	l := &Locks{rdb: rdb, prefix: prefix, ledgerLen: LedgerLength, pool: func(string) string { return "" }}
	for _, o := range opts {
		o(l)
	}
	return l
}

var _ runner.Locker = (*Locks)(nil)

// keys of one lock share a hash tag so the scripts work on Redis Cluster:
// the lock, the fencing counter, the holder's details, the ledger and the
// ledger's last fence.
func (l *Locks) keys(key string) []string {
	tag := "{" + key + "}"
	if pool := l.pool(key); pool != "" {
		tag = pool + ":" + tag
	}
	return []string{l.prefix + "lock:" + tag, l.prefix + "fence:" + tag, l.prefix + "lockmeta:" + tag,
		l.prefix + "ledger:" + tag, l.prefix + "ledgerfence:" + tag}
}

// LedgerLength is how many records an environment's ledger keeps.
const LedgerLength = 1000

var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
  return {1, fence}
end
return {0, redis.call('GET', KEYS[3]) or '', redis.call('GET', KEYS[2]) or '0'}
`)

var refreshScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[3])
end
return 0
`)

var takeoverScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3])
  return fence
end
return 0
`)

var forceReleaseScript = redis.NewScript(`
local meta = redis.call('GET', KEYS[3]) or ''
local held = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[3])
return {held, meta, redis.call('GET', KEYS[2]) or '0'}
`)

// fencedScript appends ARGV[3] to the ledger if ARGV[1] holds the lock and
// its fence ARGV[2] is not older than the last record's.
var fencedScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('GET', KEYS[5]) or '0')
if tonumber(ARGV[2]) < last then return -2 end
redis.call('SET', KEYS[5], ARGV[2])
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[4]), -1)
return 1
`)

// Acquire takes the lock if it is free. A held lock gives a
// *runner.LockedError naming the holder.
func (l *Locks) Acquire(ctx context.Context, key string, h runner.Holder, ttl time.Duration) (runner.Lease, error) {
	owner, err := newOwner()
	if err != nil {
		return runner.Lease{}, err
	}
	meta, err := json.Marshal(h)
	if err != nil {
		return runner.Lease{}, err
	}
	var res []any
	err = l.write(ctx, key, func(s redis.Scripter) (bool, error) {
		var err error
		res, err = acquireScript.Run(ctx, s, l.keys(key), owner, ttl.Milliseconds(), meta).Slice()
		return err == nil && len(res) >= 2 && res[0] == int64(1), err
	})
	if err != nil {
		if errors.Is(err, ErrNotReplicated) {
			// Nobody is told they hold it: free it rather than wait for the lease.
			_ = l.Release(ctx, runner.Lease{Key: key, Owner: owner})
		}
		return runner.Lease{}, fmt.Errorf("acquire lock %s: %w", key, err)
	}
	if len(res) >= 2 && res[0] == int64(1) {
		fence, _ := res[1].(int64)
		return runner.Lease{Key: key, Owner: owner, Fence: fence}, nil
	}
	held := runner.Holder{}
	if len(res) >= 2 {
		if s, _ := res[1].(string); s != "" {
			_ = json.Unmarshal([]byte(s), &held)
		}
	}
	if len(res) >= 3 {
		if s, _ := res[2].(string); s != "" {
			_, _ = fmt.Sscan(s, &held.Fence)
		}
	}
	return runner.Lease{}, &runner.LockedError{Key: key, Holder: held}
}

// Refresh extends the lease if its owner still holds it.
func (l *Locks) Refresh(ctx context.Context, lease runner.Lease, ttl time.Duration) error {
	var n int
	err := l.write(ctx, lease.Key, func(s redis.Scripter) (bool, error) {
		var err error
		n, err = refreshScript.Run(ctx, s, l.keys(lease.Key), lease.Owner, ttl.Milliseconds()).Int()
		return n == 1, err
	})
	if err != nil {
		return fmt.Errorf("refresh lock %s: %w", lease.Key, err)
	}
	if n != 1 {
		return fmt.Errorf("%w: %s (fence %d)", runner.ErrLockLost, lease.Key, lease.Fence)
	}
	return nil
}

// Release frees the lock if lease still holds it.
func (l *Locks) Release(ctx context.Context, lease runner.Lease) error {
	if err := releaseScript.Run(ctx, l.rdb, l.keys(lease.Key), lease.Owner).Err(); err != nil {
		return fmt.Errorf("release lock %s: %w", lease.Key, err)
	}
	return nil
}

// Holder reports who holds key.
func (l *Locks) Holder(ctx context.Context, key string) (runner.Holder, bool, error) {
	k := l.keys(key)
	vals, err := l.rdb.MGet(ctx, k[0], k[2], k[1]).Result()
	if err != nil {
		return runner.Holder{}, false, fmt.Errorf("read lock %s: %w", key, err)
	}
	if vals[0] == nil {
		return runner.Holder{}, false, nil
	}
	var h runner.Holder
	if s, ok := vals[1].(string); ok {
		_ = json.Unmarshal([]byte(s), &h)
	}
	if s, ok := vals[2].(string); ok {
		_, _ = fmt.Sscan(s, &h.Fence)
	}
	return h, true, nil
}

// Takeover gives a held lock to a new holder with a new fence.
func (l *Locks) Takeover(ctx context.Context, old runner.Lease, h runner.Holder, ttl time.Duration) (runner.Lease, error) {
	owner, err := newOwner()
	if err != nil {
		return runner.Lease{}, err
	}
	meta, err := json.Marshal(h)
	if err != nil {
		return runner.Lease{}, err
	}
	var fence int64
	err = l.write(ctx, old.Key, func(s redis.Scripter) (bool, error) {
		var err error
		fence, err = takeoverScript.Run(ctx, s, l.keys(old.Key), old.Owner, owner, ttl.Milliseconds(), meta).Int64()
		return fence != 0, err
	})
	if err != nil {
		if errors.Is(err, ErrNotReplicated) {
			_ = l.Release(ctx, runner.Lease{Key: old.Key, Owner: owner})
		}
		return runner.Lease{}, fmt.Errorf("take over lock %s: %w", old.Key, err)
	}
	if fence == 0 {
		return runner.Lease{}, fmt.Errorf("%w: %s (fence %d)", runner.ErrLockLost, old.Key, old.Fence)
	}
	return runner.Lease{Key: old.Key, Owner: owner, Fence: fence}, nil
}

// ForceRelease frees key whoever holds it.
func (l *Locks) ForceRelease(ctx context.Context, key string) (runner.Holder, bool, error) {
	res, err := forceReleaseScript.Run(ctx, l.rdb, l.keys(key)).Slice()
	if err != nil || len(res) != 3 {
		return runner.Holder{}, false, fmt.Errorf("force release %s: %w", key, err)
	}
	var h runner.Holder
	if s, _ := res[1].(string); s != "" {
		_ = json.Unmarshal([]byte(s), &h)
	}
	if s, _ := res[2].(string); s != "" {
		_, _ = fmt.Sscan(s, &h.Fence)
	}
	return h, res[0] == int64(1), nil
}

// Fenced appends record to the ledger if lease is still the holder and no
// newer fence has written.
func (l *Locks) Fenced(ctx context.Context, lease runner.Lease, record []byte) error {
	var n int
	err := l.write(ctx, lease.Key, func(s redis.Scripter) (bool, error) {
		var err error
		n, err = fencedScript.Run(ctx, s, l.keys(lease.Key), lease.Owner, lease.Fence, record, l.ledgerLen).Int()
		return n == 1, err
	})
	if err != nil {
		return fmt.Errorf("fenced write %s: %w", lease.Key, err)
	}
	switch n {
	case -1:
		return fmt.Errorf("%w: %s (fence %d)", runner.ErrLockLost, lease.Key, lease.Fence)
	case -2:
		return fmt.Errorf("%w: %s (fence %d)", runner.ErrStaleFence, lease.Key, lease.Fence)
	}
	return nil
}

// Ledger returns the newest n records.
func (l *Locks) Ledger(ctx context.Context, key string, n int) ([][]byte, error) {
	vals, err := l.rdb.LRange(ctx, l.keys(key)[3], -int64(n), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read ledger %s: %w", key, err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// write runs f, which writes lock key's keys and reports whether it
// wrote. Without WithReplicaWait it runs on the client; with it, on one
// connection to the master of key's keys, followed there by WAIT 1 when f
// wrote: WAIT counts the replicas that have every write made on its own
// connection.
func (l *Locks) write(ctx context.Context, key string, f func(redis.Scripter) (bool, error)) error {
	if l.wait <= 0 {
		_, err := f(l.rdb)
		return err
	}
	switch c := l.rdb.(type) {
	case *redis.Client:
		return l.writeOn(ctx, c, f)
	case *redis.ClusterClient:
		return l.writeCluster(ctx, c, key, f)
	default:
		return fmt.Errorf("waiting for a replica needs a Sentinel or Cluster client, not %T", l.rdb)
	}
}

// writeCluster is write on a Cluster: on the master of key's slot.
func (l *Locks) writeCluster(ctx context.Context, c *redis.ClusterClient, key string, f func(redis.Scripter) (bool, error)) error {
	// The master of the keys' slot, as the client last knew it.
	master := func() (*redis.Client, error) {
		node, err := c.MasterForKey(ctx, l.keys(key)[0])
		if err != nil {
			return nil, fmt.Errorf("find the master of lock %s: %w", key, err)
		}
		return node, nil
	}
	node, err := master()
	if err != nil {
		return err
	}
	err = l.writeOn(ctx, node, f)
	// The write did not run where the slot was: it has moved (MOVED: a
	// failover or a reshard the client has not learnt of yet), or its
	// master could not be connected to (it died, and its replica may
	// have taken over). Write once more where the slot is now: where
	// MOVED says, or where the slots, learnt again, say.
	var (
		rerr redis.Error
		nerr *net.OpError
	)
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "MOVED ") {
		c.ReloadState(ctx) // for the writes after this one
		fields := strings.Fields(rerr.Error())
		moved := redis.NewClient(nodeOptions(c.Options(), fields[len(fields)-1]))
		defer moved.Close()
		return l.writeOn(ctx, moved, f)
	}
	if !errors.As(err, &nerr) || nerr.Op != "dial" {
		return err
	}
	if lerr := c.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil }); lerr != nil {
		return errors.Join(err, fmt.Errorf("learn the slots again: %w", lerr))
	}
	next, merr := master()
	if merr != nil || next.Options().Addr == node.Options().Addr {
		return errors.Join(err, merr)
	}
	return l.writeOn(ctx, next, f)
}

// nodeOptions are the options of a client of the Cluster node at addr, as
// the Cluster client's own.
func nodeOptions(o *redis.ClusterOptions, addr string) *redis.Options {
	return &redis.Options{Addr: addr, Dialer: o.Dialer, Protocol: o.Protocol, Username: o.Username, Password: o.Password,
		CredentialsProvider: o.CredentialsProvider, CredentialsProviderContext: o.CredentialsProviderContext,
		TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled, MaxRetries: o.MaxRetries, PoolSize: 1}
}

// writeOn runs f on one connection to node, and WAIT 1 there if f wrote.
func (l *Locks) writeOn(ctx context.Context, node *redis.Client, f func(redis.Scripter) (bool, error)) error {
	conn := node.Conn()
	defer conn.Close()
	wrote, err := f(conn)
	if err != nil || !wrote {
		return err
	}
	acked, err := conn.Do(ctx, "WAIT", 1, l.wait.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err)
	}
	if acked < 1 {
		return fmt.Errorf("%w (%v)", ErrNotReplicated, l.wait)
	}
	return nil
}

func newOwner() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("no randomness for a lock owner token")
	}
	return hex.EncodeToString(b), nil
}
