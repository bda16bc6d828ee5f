package approvals

import (
	"context"
	"errors"
	"fmt"
)

// Store keeps plans. Put is a compare-and-swap on Plan.Version, so two
// processes that read the same plan cannot both write their change.
type Store interface {
	// Create stores a new plan with Version 1; ErrExists if the ID is taken.
	Create(ctx context.Context, p Plan) (Plan, error)
	// Get returns a plan; ErrNotFound if there is none.
	Get(ctx context.Context, id string) (Plan, error)
	// Put replaces the plan if its Version is still the stored one and
	// returns it with the next Version; ErrConflict otherwise.
	Put(ctx context.Context, p Plan) (Plan, error)
	// Active lists plans that are not terminal, oldest first.
	Active(ctx context.Context) ([]Plan, error)
}

// GrantStore keeps break-glass grants, with the same compare-and-swap on
// BreakGlass.Version.
type GrantStore interface {
	CreateGrant(ctx context.Context, g BreakGlass) (BreakGlass, error)
	GetGrant(ctx context.Context, id string) (BreakGlass, error)
	PutGrant(ctx context.Context, g BreakGlass) (BreakGlass, error)
	// OpenGrants lists grants that are not Closed, oldest first.
	OpenGrants(ctx context.Context) ([]BreakGlass, error)
}

// Store errors.
var (
	ErrNotFound = errors.New("no such plan")
	ErrExists   = errors.New("plan already exists")
	ErrConflict = errors.New("plan changed concurrently")
)

// maxUpdateAttempts bounds Update's retries; contention on one plan is a
// handful of clicks, so running out means something is wrong.
const maxUpdateAttempts = 16

// ErrUnchanged, returned by an Update function, ends the update without
// writing and without error.
var ErrUnchanged = errors.New("unchanged")

// Update reads plan id, applies fn, and writes the result with a
// compare-and-swap, retrying from a fresh read when another writer got there
// first. fn must be pure: it may run more than once. It returns the plan as
// stored, and fn's error (with the plan fn saw) if fn refused.
func Update(ctx context.Context, s Store, id string, fn func(Plan) (Plan, error)) (Plan, error) {
	return update(ctx, id, s.Get, s.Put, func(p *Plan) *int64 { return &p.Version }, fn)
}

// UpdateGrant is Update for a break-glass grant.
func UpdateGrant(ctx context.Context, s GrantStore, id string, fn func(BreakGlass) (BreakGlass, error)) (BreakGlass, error) {
	return update(ctx, id, s.GetGrant, s.PutGrant, func(g *BreakGlass) *int64 { return &g.Version }, fn)
}

func update[T any](ctx context.Context, id string, get func(context.Context, string) (T, error),
	put func(context.Context, T) (T, error), version func(*T) *int64, fn func(T) (T, error)) (T, error) {
	var zero T
	for range maxUpdateAttempts {
		cur, err := get(ctx, id)
		if err != nil {
			return zero, err
		}
		next, err := fn(cur)
		if errors.Is(err, ErrUnchanged) {
			return cur, nil
		}
		if err != nil {
			return cur, err
		}
		*version(&next) = *version(&cur)
		stored, err := put(ctx, next)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return stored, err
	}
	return zero, fmt.Errorf("update %s: %w after %d attempts", id, ErrConflict, maxUpdateAttempts)
}
