package change

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// detaching is a runner whose plans and applies run on with nobody
// waiting (the replica that dispatched them stopped), and the results it
// keeps for a sweeper to find.
type detaching struct {
	*fakeRunner
	mu      sync.Mutex
	plans   map[string]runner.PlanResult
	applies map[string]runner.ApplyResult
}

func (d *detaching) Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	res, err := d.fakeRunner.Plan(ctx, job)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.plans[job.PlanID] = res
	return runner.PlanResult{}, err // … but the caller stopped waiting
}

func (d *detaching) Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	res, _ := d.fakeRunner.Apply(ctx, job)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applies[job.Permit.PlanID()] = res
	return runner.ApplyResult{}, runner.ErrDetached
}

func (d *detaching) PlanOutcome(_ context.Context, p approvals.Plan) (runner.PlanResult, error, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res, ok := d.plans[p.ID]
	return res, nil, ok
}

func (d *detaching) ApplyOutcome(_ context.Context, p approvals.Plan) (runner.ApplyResult, error, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	res, ok := d.applies[p.ID]
	return res, nil, ok
}

// notes counts the thread notes that contain a phrase.
type notes struct {
	quiet
	mu  sync.Mutex
	all []string
}

func (n *notes) Note(_ context.Context, _ Thread, text string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.all = append(n.all, text)
	return nil
}

func (n *notes) count(phrase string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, t := range n.all {
		if strings.Contains(t, phrase) {
			c++
		}
	}
	return c
}

// A plan whose replica stopped waiting is completed by a sweeper from the
// kept result while its lock still holds — it waits for approvals, it is
// not voided when the lease runs out — and so is an apply, once: however
// many sweepers find the result, the thread says "Apply complete" once.
func TestDetachedWorkCompletes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	d := &detaching{fakeRunner: h.run, plans: map[string]runner.PlanResult{}, applies: map[string]runner.ApplyResult{}}
	n := &notes{}
	h.svc.o.Runner, h.svc.o.Outcomes, h.svc.n = d, d, n
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	h.dir.members[pGroup] = []string{pBob, pCarol}
	h.run.detached = true

	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	plans, _ := h.store.Active(ctx)
	if len(plans) != 1 || plans[0].Status != approvals.StatusPlanning {
		t.Fatalf("after a detached plan: %+v", plans)
	}
	id := plans[0].ID
	h.svc.Sweep(ctx)
	p, _ := h.store.Get(ctx, id)
	if p.Status != approvals.StatusPending {
		t.Fatalf("the sweeper left the finished plan %s (%s), want pending", p.Status, p.Reason)
	}
	if _, held, _ := h.svc.o.Locks.Holder(ctx, runner.LockKey(p.Project, p.Env)); !held {
		t.Fatal("the completed plan does not hold its environment")
	}

	for _, u := range []string{pBob, pCarol} {
		if err := h.svc.Approve(ctx, pChannel, u, id); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ = h.store.Get(ctx, id); p.Status != approvals.StatusApplying {
		t.Fatalf("after a detached apply: %s", p.Status)
	}
	var wg sync.WaitGroup
	for range 3 { // three replicas' sweepers at once
		wg.Add(1)
		go func() { defer wg.Done(); h.svc.Sweep(ctx) }()
	}
	wg.Wait()
	if p, _ = h.store.Get(ctx, id); p.Status != approvals.StatusApplied {
		t.Fatalf("the sweepers left the finished apply %s (%s), want applied", p.Status, p.Reason)
	}
	if c := n.count("Apply complete"); c != 1 {
		t.Fatalf("%d \"Apply complete\" notes, want 1: %q", c, n.all)
	}
}

// A re-plan voids the pull request's pending plan, and the record says so.
func TestReplanIsRecorded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	rec := &memAudit{}
	h.svc.o.Audit = rec
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
			t.Fatal(err)
		}
	}
	plans := h.store.order
	if len(plans) != 2 {
		t.Fatalf("%d plans, want 2", len(plans))
	}
	for _, e := range rec.events {
		if e.Type == audit.Invalidation && e.PlanID == plans[0] && strings.Contains(e.Detail["reason"], "replaced by a new plan") {
			return
		}
	}
	t.Fatalf("no invalidation of the replaced plan %s in the record: %+v", plans[0], rec.events)
}
