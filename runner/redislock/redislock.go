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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/runner"
)

// Locks is a runner.Locker.
type Locks struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns locks stored under prefix (e.g. "twokey:").
func New(rdb redis.UniversalClient, prefix string) *Locks {
	return &Locks{rdb: rdb, prefix: prefix}
}

var _ runner.Locker = (*Locks)(nil)

// keys of one lock share a hash tag so the scripts work on Redis Cluster.
func (l *Locks) keys(key string) []string {
	tag := "{" + key + "}"
	return []string{l.prefix + "lock:" + tag, l.prefix + "fence:" + tag, l.prefix + "lockmeta:" + tag}
}

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
	res, err := acquireScript.Run(ctx, l.rdb, l.keys(key), owner, ttl.Milliseconds(), meta).Slice()
	if err != nil {
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
	n, err := refreshScript.Run(ctx, l.rdb, l.keys(lease.Key), lease.Owner, ttl.Milliseconds()).Int()
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

func newOwner() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("no randomness for a lock owner token")
	}
	return hex.EncodeToString(b), nil
}
