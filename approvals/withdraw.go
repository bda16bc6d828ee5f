package approvals

import (
	"slices"
	"time"
)

// Withdraw drops the approvals of users — people who lost the right to
// approve after they clicked — from a pending plan. The plan then waits
// for others to approve in their place. Nothing to drop: ErrUnchanged.
func Withdraw(p Plan, users []string, now time.Time) (Plan, error) {
	if p.Status != StatusPending {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	kept := slices.DeleteFunc(slices.Clone(p.Approvals), func(a Approval) bool { return slices.Contains(users, a.User) })
	if len(kept) == len(p.Approvals) {
		return p, ErrUnchanged
	}
	p.Approvals, p.UpdatedAt = kept, now
	return p, nil
}
