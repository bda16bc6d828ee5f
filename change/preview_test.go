package change

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// shown records every rendering of a plan's message.
type shown struct {
	quiet
	mu    sync.Mutex
	plans []approvals.Plan
}

func (n *shown) ShowPlan(ctx context.Context, p approvals.Plan) (Posted, error) {
	n.mu.Lock()
	n.plans = append(n.plans, p)
	n.mu.Unlock()
	return n.quiet.ShowPlan(ctx, p)
}

// While the saved plan is read back, the message shows what terraform said
// the plan does, with its buttons. An Approve clicked then carries the tag
// of what it showed, waits for the saved plan, and counts only if the saved
// plan says the same and its checks found nothing more; a click before there
// is anything to see is refused, and so is a preview click without a tag.
func TestPreviewClicks(t *testing.T) {
	other := approvals.Summary{Add: 1, Destroy: 1, Resources: []approvals.Resource{
		{Address: "terraform_data.a", Action: approvals.ActionCreate}}}
	for _, tt := range []struct {
		name    string
		preview *approvals.Summary
		policy  approvals.Assessment
		rewrite bool  // the stored preview is rewritten to match the saved plan
		want    error // of the click on the preview
	}{
		{name: "borne out"},
		{name: "destroys it named", policy: approvals.Assessment{Risks: []approvals.Risk{{Kind: approvals.RiskDestroy, Address: "x"}}}},
		{name: "saved plan differs", preview: &other, want: ErrLookAgain},
		// A Redis writer makes the stored preview say what the saved plan
		// says: the click is still decided on what it was shown.
		{name: "stored preview rewritten", preview: &other, rewrite: true, want: ErrLookAgain},
		{name: "policy warns", policy: approvals.Assessment{Checked: true, Warnings: []approvals.Finding{{Rule: "r", Message: "look"}}},
			want: ErrLookAgain},
		{name: "a risk it could not show", policy: approvals.Assessment{Risks: []approvals.Risk{{Kind: approvals.RiskIAM, Address: "x"}}},
			want: ErrLookAgain},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := previewHarness(t)
			n := &shown{}
			h.svc.n = n
			h.run.policy, h.run.preview = tt.policy, tt.preview
			ctx := context.Background()
			var early, click error
			var clicked sync.WaitGroup
			h.run.before = func(job runner.PlanJob) {
				// Before the preview is in: refused.
				early = errors.Join(h.svc.Approve(ctx, pChannel, pCarol, job.PlanID),
					h.svc.ApprovePreview(ctx, pChannel, pCarol, job.PlanID, ""))
			}
			h.run.during = func(job runner.PlanJob) {
				p, _ := h.store.Get(ctx, job.PlanID)
				for deadline := time.Now().Add(10 * time.Second); p.Preview == nil && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
					p, _ = h.store.Get(ctx, job.PlanID)
				}
				// The click reads the plan while it is still planning.
				read := make(chan struct{})
				var once sync.Once
				h.store.mu.Lock()
				h.store.got = func(string) { once.Do(func() { close(read) }) }
				h.store.mu.Unlock()
				if tt.rewrite {
					if _, err := approvals.Update(ctx, h.store, job.PlanID, func(q approvals.Plan) (approvals.Plan, error) {
						q.Preview = &approvals.Summary{Add: 1, Resources: []approvals.Resource{
							{Address: "terraform_data.a", Action: approvals.ActionCreate}}}
						return q, nil
					}); err != nil {
						t.Error(err)
					}
				}
				// The button carries the tag of the preview it was shown on.
				var tag string
				for deadline := time.Now().Add(10 * time.Second); tag == "" && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					n.mu.Lock()
					for _, q := range n.plans {
						if q.Preview != nil {
							tag = q.Preview.Tag()
						}
					}
					n.mu.Unlock()
				}
				clicked.Go(func() { click = h.svc.ApprovePreview(ctx, pChannel, pBob, job.PlanID, tag) })
				<-read
			}
			h.planPR1(t)
			clicked.Wait()
			var se *approvals.StateError
			if !errors.As(early, &se) || se.Status != approvals.StatusPlanning {
				t.Errorf("Approve before the preview: %v, want refused as still planning", early)
			}
			if !errors.Is(click, tt.want) {
				t.Errorf("Approve on the preview: %v, want %v", click, tt.want)
			}
			p, err := h.store.Get(ctx, h.openPlan(t))
			if err != nil {
				t.Fatal(err)
			}
			want := []string{pBob}
			if tt.want != nil {
				want = nil
			}
			if got := approvals.Approvers(p); len(got) != len(want) || len(got) > 0 && got[0] != want[0] {
				t.Errorf("approvers %v, want %v", got, want)
			}
			if p.Status != approvals.StatusPending || p.Preview != nil || h.applied(p.ID) {
				t.Errorf("after: %s, preview %v", p.Status, p.Preview)
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			var previewed bool
			for _, q := range n.plans {
				if q.Preview != nil && q.Status == approvals.StatusPlanning {
					previewed = true
				}
			}
			if !previewed {
				t.Error("the preview was never shown")
			}
			if last := n.plans[len(n.plans)-1]; last.Status != approvals.StatusPending {
				t.Errorf("last shown as %s", last.Status)
			}
		})
	}
}

// A Redis writer shows the click's first read a forged record (the Summary
// the preview showed, no policy) and puts the sealed one back before the
// click is counted: the click is decided on the sealed record, and refused.
func TestPreviewClickOnASwappedRead(t *testing.T) {
	h := previewHarness(t)
	// The saved plan has a policy warning: a preview click must not count.
	h.run.policy = approvals.Assessment{Checked: true, Warnings: []approvals.Finding{{Rule: "r", Message: "look at this"}}}
	ctx := context.Background()
	h.planPR1(t)
	id := h.openPlan(t)
	genuine, _ := h.store.Get(ctx, id)
	// What the approver was shown on the preview (a benign summary).
	shownSum := approvals.Summary{Add: 1, Resources: []approvals.Resource{{Address: "terraform_data.harmless", Action: approvals.ActionCreate}}}
	if shownSum.Tag() == genuine.Summary.Tag() {
		t.Fatal("setup: summaries must differ")
	}
	forged := genuine
	forged.Summary, forged.Policy = shownSum, approvals.Assessment{}
	stop := h.swapFirstRead(id, forged)
	err := h.svc.ApprovePreview(ctx, pChannel, pBob, id, shownSum.Tag())
	stop()
	p, _ := h.store.Get(ctx, id)
	if got := approvals.Approvers(p); len(got) > 0 {
		t.Errorf("preview click with tag of %v counted (err %v) on a sealed plan saying %v with policy warnings %v",
			shownSum.Resources, err, p.Summary.Resources, p.Policy.Warnings)
	}
}

// A Redis writer flips the (unsealed) status the click reads first, and
// back: the click is still checked against what it was shown, and refused.
func TestPreviewClickOnAFlippedStatus(t *testing.T) {
	h := previewHarness(t)
	h.run.policy = approvals.Assessment{Checked: true, Warnings: []approvals.Finding{{Rule: "r", Message: "look at this"}}}
	ctx := context.Background()
	h.planPR1(t)
	id := h.openPlan(t)
	genuine, _ := h.store.Get(ctx, id)
	forged := genuine
	forged.Status = approvals.StatusApplying // unsealed field; Summary and Policy untouched
	stop := h.swapFirstRead(id, forged)
	shown := approvals.Summary{Add: 9, Resources: []approvals.Resource{{Address: "terraform_data.other", Action: approvals.ActionCreate}}}
	err := h.svc.ApprovePreview(ctx, pChannel, pBob, id, shown.Tag())
	stop()
	p, _ := h.store.Get(ctx, id)
	if got := approvals.Approvers(p); len(got) > 0 {
		t.Errorf("preview click with a tag matching nothing counted (err %v) on a plan with policy warnings", err)
	}
}

// A policy that raises the quorum and asks for a group, with a reason, said
// something the preview could not show: the security group's click on the
// preview does not count.
func TestPreviewClickWithPolicyItCouldNotShow(t *testing.T) {
	h, id := gateHarness(t, approvals.Assessment{Checked: true, Required: 3,
		Groups:  []approvals.GroupRequirement{{Group: "security", Reason: "rotates the production database master password"}},
		Reasons: []string{"touches production data"}})
	ctx := context.Background()
	p, _ := h.store.Get(ctx, id)
	// The preview the approver saw: terraform's account, equal to the saved summary.
	err := h.svc.ApprovePreview(ctx, pChannel, pErin, id, p.Summary.Tag())
	p, _ = h.store.Get(ctx, id)
	if got := approvals.Approvers(p); len(got) > 0 {
		t.Errorf("preview click counted (err %v, groups %v) although policy asked for %d approvals and group %v because %q, none of it shown",
			err, p.Approvals[0].Groups, p.Required, p.Policy.Groups, p.Policy.Reasons)
	}
}

// gated blocks the rendering of a preview until released.
type gated struct {
	shown
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (n *gated) ShowPlan(ctx context.Context, p approvals.Plan) (Posted, error) {
	if p.Status == approvals.StatusPlanning && p.Preview != nil {
		n.once.Do(func() { close(n.entered) })
		<-n.release
	}
	return n.shown.ShowPlan(ctx, p)
}

// Rejected while planning, on a plan this replica stops waiting for
// (runner.ErrDetached), with the preview's render landing after the
// reject's: the message ends showing the rejected plan, not the preview.
func TestPreviewRenderedAfterRejectDetached(t *testing.T) {
	h := previewHarness(t)
	n := &gated{entered: make(chan struct{}), release: make(chan struct{})}
	h.svc.n = n
	h.run.detached = true
	ctx := context.Background()
	h.run.before = func(job runner.PlanJob) {
		// A click handled while the runner waits for the preview.
		go func() {
			<-n.entered // the preview is being rendered
			if err := h.svc.Reject(ctx, pChannel, pBob, job.PlanID); err != nil {
				t.Error(err)
			}
			close(n.release)
		}()
	}
	h.planPR1(t)
	n.mu.Lock()
	defer n.mu.Unlock()
	last := n.plans[len(n.plans)-1]
	var id string
	for k := range h.store.plans {
		id = k
	}
	cur, _ := h.store.Get(ctx, id)
	if last.Status != cur.Status {
		t.Errorf("plan is %s, but its message was last shown as %s with preview %v (Approve/Reject buttons live)",
			cur.Status, last.Status, last.Preview != nil)
	}
}

// The requester who is no approver clicking the preview is told what any
// click of theirs is told: nobody approves their own plan.
func TestPreviewClickByTheRequester(t *testing.T) {
	h := previewHarness(t)
	ctx := context.Background()
	var clickErr error
	var clicked sync.WaitGroup
	h.run.during = func(job runner.PlanJob) {
		for p, _ := h.store.Get(ctx, job.PlanID); p.Preview == nil; p, _ = h.store.Get(ctx, job.PlanID) {
			time.Sleep(time.Millisecond)
		}
		p, _ := h.store.Get(ctx, job.PlanID)
		clicked.Go(func() { clickErr = h.svc.ApprovePreview(ctx, pChannel, pAlice, job.PlanID, p.Preview.Tag()) })
	}
	h.planPR1(t)
	clicked.Wait()
	if !errors.Is(clickErr, approvals.ErrSelfApproval) {
		t.Fatalf("the requester's click on the preview: %v, want %v", clickErr, approvals.ErrSelfApproval)
	}
}

// Only someone whose approval could count waits for the saved plan: a
// non-approver's click on the preview is refused at once, not held
// polling the store while the plan is read back.
func TestPreviewClickByNonApproverDoesNotWait(t *testing.T) {
	h := previewHarness(t)
	ctx := context.Background()
	var gets int
	var clickErr error
	done := make(chan struct{})
	h.run.during = func(job runner.PlanJob) {
		for p, _ := h.store.Get(ctx, job.PlanID); p.Preview == nil; p, _ = h.store.Get(ctx, job.PlanID) {
			time.Sleep(time.Millisecond)
		}
		h.store.mu.Lock()
		h.store.got = func(string) { gets++ }
		h.store.mu.Unlock()
		go func() { // pDave is no approver
			clickErr = h.svc.ApprovePreview(ctx, pChannel, pDave, job.PlanID, strings.Repeat("0", 64))
			close(done)
		}()
		time.Sleep(500 * time.Millisecond) // the saved plan is being read back
	}
	h.planPR1(t)
	<-done
	h.store.mu.Lock()
	n := gets
	h.store.got = nil
	h.store.mu.Unlock()
	if n > 2 || !errors.Is(clickErr, approvals.ErrNotAuthorized) {
		t.Errorf("a non-approver's preview click read the plan %d times and ended %v", n, clickErr)
	}
}

// previewHarness is a service whose approvers are bob and carol (and erin),
// planning a head commit.
func previewHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.dir.members[pGroup] = []string{pBob, pCarol}
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	return h
}

// planPR1 is alice's `/tf plan staging pr-1`.
func (h *harness) planPR1(t *testing.T) {
	t.Helper()
	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Plan(context.Background(), pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
}

// swapFirstRead makes the next read of plan id return forged and puts the
// stored plan back at the read after: a Redis writer racing a click. stop
// ends it.
func (h *harness) swapFirstRead(id string, forged approvals.Plan) (stop func()) {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	genuine, gets := h.store.plans[id], 0
	h.store.got = func(string) { // under h.store.mu
		gets++
		switch gets {
		case 1:
			h.store.plans[id] = forged
		case 2:
			h.store.plans[id] = genuine
		}
	}
	return func() {
		h.store.mu.Lock()
		h.store.got = nil
		h.store.mu.Unlock()
	}
}
