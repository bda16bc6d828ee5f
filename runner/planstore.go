package runner

import (
	"context"
	"errors"
	"time"
)

// PlanStore keeps saved plan files where every bot process can read them,
// so an apply can run on another process (or machine) than its plan. Saved
// plans hold sensitive values in clear text, so implementations encrypt them.
type PlanStore interface {
	Save(ctx context.Context, planID string, data []byte, ttl time.Duration) error
	Load(ctx context.Context, planID string) ([]byte, error)
	Delete(ctx context.Context, planID string) error
}

// ErrNoPlanFile means the saved plan is not in the store (expired, deleted,
// or written under another key).
var ErrNoPlanFile = errors.New("saved plan file not found")
