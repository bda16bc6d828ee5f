package approvals

import (
	"errors"
	"testing"
	"time"
)

func TestWithdraw(t *testing.T) {
	p := pendingPlan(t, 2, true)
	for _, u := range []string{"UA", "UB"} {
		var err error
		if p, _, err = Approve(p, u, true, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if !HasQuorum(p) {
		t.Fatal("no quorum")
	}
	q, err := Withdraw(p, []string{"UA"}, t0.Add(2*time.Minute))
	if err != nil || HasQuorum(q) || Missing(q) != 1 || Approvers(q)[0] != "UB" {
		t.Fatalf("Withdraw = %v, %v", Approvers(q), err)
	}
	if len(p.Approvals) != 2 {
		t.Error("Withdraw changed its argument")
	}
	if _, err := Withdraw(q, []string{"UC"}, t0); !errors.Is(err, ErrUnchanged) {
		t.Errorf("withdrawing nobody: %v", err)
	}
	q.Status = StatusApplying
	if _, err := Withdraw(q, []string{"UB"}, t0); !errors.Is(err, ErrNotPending) {
		t.Errorf("withdrawing from an applying plan: %v", err)
	}
}
