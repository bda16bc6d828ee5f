package redisjobs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

type vaultOnceDown struct {
	*fakeExec
	n atomic.Int32
}

func (v *vaultOnceDown) Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	if v.n.Add(1) == 1 {
		return runner.ApplyResult{}, fmt.Errorf("%w: vault sealed", runner.ErrCredentials)
	}
	return v.fakeExec.Apply(ctx, job)
}

// README guarantee 7 on a runner pool: Vault down, no apply, the plan
// returns to pending with its approvals, and the retry — a new permit —
// is a new attempt: its own claim and its own kept result, not the first
// attempt's (which would refuse it as a taken-over apply).
func TestRetryAfterVaultDownOnPool(t *testing.T) {
	f := setup(t)
	exec := &vaultOnceDown{fakeExec: &fakeExec{}}
	f.worker(t, "nonprod", "w1", exec, time.Second)
	ctx := context.Background()
	f.plan(t, "p-retry", "dev", approvals.StatusApplying)
	_, err := f.client.Apply(ctx, runner.ApplyJob{Permit: f.grant(t, "p-retry"), Rev: runner.Revision{SHA: "abc"}})
	if !errors.Is(err, runner.ErrCredentials) {
		t.Fatalf("attempt 1: %v", err)
	}
	// serve: Abort (back to pending), then the retry click: BeginApply again.
	p, _ := f.store.Get(ctx, "p-retry")
	g := f.grant(t, "p-retry")
	p, err = approvals.Abort(p, g, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, _, err = f.notary.BeginApply(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err = f.store.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	_, err = f.client.Apply(ctx, runner.ApplyJob{Permit: f.grant(t, "p-retry"), Rev: runner.Revision{SHA: "abc"}})
	if err != nil {
		t.Fatalf("the retry after Vault came back is refused: %v (applies run: %d)", err, exec.n.Load())
	}
}
