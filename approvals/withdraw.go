package approvals

import (
	"slices"
	"time"
)

// Withdraw drops the approvals and overrides of users — people who lost the
// right to give them after they clicked — from a pending plan. The plan then waits
// for others to approve in their place. Nothing to drop: ErrUnchanged.
func Withdraw(p Plan, users []string, now time.Time) (Plan, error) {
	if p.Status != StatusPending {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	gone := func(a Approval) bool { return slices.Contains(users, a.User) }
	kept := slices.DeleteFunc(slices.Clone(p.Approvals), gone)
	keptOverrides := slices.DeleteFunc(slices.Clone(p.Overrides), gone)
	if len(kept) == len(p.Approvals) && len(keptOverrides) == len(p.Overrides) {
		return p, ErrUnchanged
	}
	p.Approvals, p.Overrides, p.UpdatedAt = kept, keptOverrides, now
	return p, nil
}
