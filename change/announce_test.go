package change

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// sweptMidway is a runner pool whose apply could not start (Vault
// sealed): it keeps that result, and a sweeper on another replica finds it
// before the waiting replica acts on the same answer — redisjobs' order:
// the event, the kept result, then the waiting replica.
type sweptMidway struct {
	*fakeRunner
	mu    sync.Mutex
	kept  map[string]error
	sweep func()
}

func (s *sweptMidway) Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	err := fmt.Errorf("%w: vault sealed", runner.ErrCredentials)
	s.mu.Lock()
	s.kept[job.Permit.PlanID()] = err
	s.mu.Unlock()
	s.sweep()
	return runner.ApplyResult{}, err
}

func (s *sweptMidway) PlanOutcome(context.Context, approvals.Plan) (runner.PlanResult, error, bool) {
	return runner.PlanResult{}, nil, false
}

func (s *sweptMidway) ApplyOutcome(_ context.Context, p approvals.Plan) (runner.ApplyResult, error, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err, ok := s.kept[p.ID]
	return runner.ApplyResult{}, err, ok
}

// An apply that could not start, handled both by a sweeper and by the
// replica that waited for it, is announced once: only the one whose
// compare-and-swap returned the plan to pending speaks.
func TestAbortIsAnnouncedOnce(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	k := &sweptMidway{fakeRunner: h.run, kept: map[string]error{}}
	k.sweep = func() { h.svc.Sweep(ctx) }
	n := &notes{}
	h.svc.o.Runner, h.svc.o.Outcomes, h.svc.n = k, k, n
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	h.dir.members[pGroup] = []string{pBob, pCarol}
	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	id := h.openPlan(t)
	if err := h.svc.Approve(ctx, pChannel, pBob, id); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Approve(ctx, pChannel, pCarol, id); err == nil {
		t.Fatal("the deciding click did not hear that Vault is unavailable")
	}
	if c := n.count("Vault is unavailable"); c != 1 {
		t.Fatalf("%d \"Vault is unavailable\" notes for one apply that could not start: %q", c, n.all)
	}
	if p, _ := h.store.Get(ctx, id); p.Status != approvals.StatusPending || len(approvals.Approvers(p)) != 2 {
		t.Fatalf("after the apply could not start: %s with %v", p.Status, approvals.Approvers(p))
	}
}
