package runner

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Locker keeps one pending change per environment. Acquire takes the lock
// only if it is free and hands out a fencing number that rises strictly with
// every grant; Refresh and Release act only for the owner.
type Locker interface {
	Acquire(ctx context.Context, key string, h Holder, ttl time.Duration) (Lease, error)
	// Refresh extends a held lease to ttl from now; ErrLockLost if the
	// lease is no longer held by its owner.
	Refresh(ctx context.Context, l Lease, ttl time.Duration) error
	// Release frees a held lease; releasing a lease one does not hold is a no-op.
	Release(ctx context.Context, l Lease) error
	// Holder reports who holds key, if anyone.
	Holder(ctx context.Context, key string) (Holder, bool, error)
	// Takeover hands a held lock to a new holder in one step, with a new
	// fence; ErrLockLost if old no longer holds it.
	Takeover(ctx context.Context, old Lease, h Holder, ttl time.Duration) (Lease, error)
	// ForceRelease frees key whoever holds it, and says who did.
	ForceRelease(ctx context.Context, key string) (Holder, bool, error)
	// Fenced appends a record to the environment's ledger if l still holds
	// the lock and no record with a newer fence was written:
	// ErrLockLost or ErrStaleFence otherwise. A holder that was paused past
	// its lease can never write after the next holder.
	Fenced(ctx context.Context, l Lease, record []byte) error
	// Ledger returns the newest n records of key's ledger, oldest first.
	Ledger(ctx context.Context, key string, n int) ([][]byte, error)
}

// Lease is a held lock. It is a plain value so that it can be stored with
// the plan and used by any bot process.
type Lease struct {
	Key   string `json:"key"`
	Owner string `json:"owner"` // random token known only to the holder
	Fence int64  `json:"fence"`
}

// Holder says who holds a lock, for the message a refused user reads.
type Holder struct {
	User   string    `json:"user"`
	PR     int       `json:"pr,omitempty"`
	Ref    string    `json:"ref,omitempty"` // what is planned, for people: "PR #42", "tag v1.2"
	PlanID string    `json:"plan_id"`
	Since  time.Time `json:"since"`
	Fence  int64     `json:"fence"`
}

// Lock errors.
var (
	ErrLocked     = errors.New("environment is locked")
	ErrLockLost   = errors.New("environment lock lost")
	ErrStaleFence = errors.New("a newer lock holder has written since")
)

// LockedError is ErrLocked with the holder's details.
type LockedError struct {
	Key    string
	Holder Holder
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s is locked by %s for %s since %s", e.Key, e.Holder.User, e.Holder.What(),
		e.Holder.Since.UTC().Format(time.RFC3339))
}

// What names what the holder planned.
func (h Holder) What() string {
	if h.Ref != "" {
		return h.Ref
	}
	return fmt.Sprintf("PR #%d", h.PR)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// LockKey names the lock of one environment of one project.
func LockKey(project, env string) string { return project + "/" + env }

// KeepLease refreshes l every ttl/3 until ctx ends. If a refresh fails for
// longer than the lease could still be valid — the lock was taken over, or
// Redis was unreachable until the lease ran out — it calls lost, which
// cancels the work the lease protects.
func KeepLease(ctx context.Context, locks Locker, l Lease, ttl time.Duration, lost func(error)) {
	every := max(ttl/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	validUntil := time.Now().Add(ttl)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		attempt := time.Now()
		rctx, cancel := context.WithTimeout(ctx, every)
		err := locks.Refresh(rctx, l, ttl)
		cancel()
		switch {
		case err == nil:
			validUntil = attempt.Add(ttl)
		case errors.Is(err, ErrLockLost):
			lost(err)
			return
		case ctx.Err() != nil:
			return
		case !time.Now().Add(every).Before(validUntil):
			// Another failed attempt would leave us past the lease: stop now.
			lost(fmt.Errorf("%w: cannot refresh: %v", ErrLockLost, err))
			return
		}
	}
}
