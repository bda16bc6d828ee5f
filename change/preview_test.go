package change

import (
	"context"
	"errors"
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
			h := newHarness(t)
			n := &shown{}
			h.svc.n = n
			h.dir.members[pGroup] = []string{pBob, pCarol}
			h.run.head = "0123456789abcdef0123456789abcdef01234567"
			h.run.policy, h.run.preview = tt.policy, tt.preview
			ctx := context.Background()
			var early, click error
			var clicked sync.WaitGroup
			h.run.during = func(job runner.PlanJob) {
				// Before the preview is in: refused.
				p, _ := h.store.Get(ctx, job.PlanID)
				if p.Preview == nil {
					early = errors.Join(h.svc.Approve(ctx, pChannel, pCarol, job.PlanID),
						h.svc.ApprovePreview(ctx, pChannel, pCarol, job.PlanID, ""))
				}
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
			cmd, err := commands.Parse("plan staging pr-1")
			if err != nil {
				t.Fatal(err)
			}
			if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
				t.Fatal(err)
			}
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
