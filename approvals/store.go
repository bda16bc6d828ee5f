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
	for range maxUpdateAttempts {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return Plan{}, err
		}
		next, err := fn(cur)
		if errors.Is(err, ErrUnchanged) {
			return cur, nil
		}
		if err != nil {
			return cur, err
		}
		next.Version = cur.Version
		stored, err := s.Put(ctx, next)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return stored, err
	}
	return Plan{}, fmt.Errorf("update plan %s: %w after %d attempts", id, ErrConflict, maxUpdateAttempts)
}
