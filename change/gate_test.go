package change

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

const pSecurity = "SSECURITY"

// gateHarness is a harness whose staging policy is owned by dave and
// whose "security" group is the Slack group SSECURITY.
func gateHarness(t *testing.T, a approvals.Assessment) (*harness, string) {
	t.Helper()
	h := newHarness(t)
	h.svc.cfg.Projects[0].Environments[0].Policy = &config.Policy{Dir: "/policies",
		Owners: config.Who{Users: []string{pDave}}, Groups: map[string]config.Who{"security": {Groups: []string{pSecurity}}}}
	h.dir.members[pGroup] = []string{pBob, pCarol}
	h.dir.members[pSecurity] = []string{pErin}
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	h.run.policy = a
	cmd, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Plan(context.Background(), pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	id := h.openPlan(t)
	if id == "" {
		t.Fatal("no pending plan")
	}
	return h, id
}

func (h *harness) applied(id string) bool {
	h.run.mu.Lock()
	defer h.run.mu.Unlock()
	return len(h.run.applies[id]) > 0
}

// Someone who left the security group after approving no longer gives
// the plan its security approval: checked right before the apply.
func TestRequiredGroupRecheckedBeforeApply(t *testing.T) {
	h, id := gateHarness(t, approvals.Assessment{Checked: true, Groups: []approvals.GroupRequirement{{Group: "security"}}})
	ctx := context.Background()
	if err := h.svc.Approve(ctx, pChannel, pErin, id); err != nil {
		t.Fatal(err)
	}
	h.dir.members[pSecurity] = nil
	if err := h.svc.Approve(ctx, pChannel, pBob, id); err != nil {
		t.Fatal(err)
	}
	if h.applied(id) {
		t.Fatal("applied with a security approval from someone no longer in security")
	}
	p, _ := h.store.Get(ctx, id)
	if got := approvals.Approvers(p); len(got) != 1 || got[0] != pBob {
		t.Fatalf("approvers after the re-check = %v, want only bob", got)
	}
	if err := h.svc.Approve(ctx, pChannel, pCarol, id); err != nil {
		t.Fatal(err)
	}
	if h.applied(id) {
		t.Fatal("applied on two approvals without security")
	}
	h.dir.members[pSecurity] = []string{pErin}
	if err := h.svc.Approve(ctx, pChannel, pErin, id); err != nil {
		t.Fatal(err)
	}
	if !h.applied(id) {
		t.Fatal("not applied once security approved again")
	}
}

// A policy owner who wrote the change cannot override its denial, and an
// owner who stopped being one before the apply no longer counts.
func TestOverrideByAuthorsAndFormerOwners(t *testing.T) {
	denied := approvals.Assessment{Checked: true, Denied: []approvals.Finding{{Rule: "x.deny", Message: "no"}}}
	ctx := context.Background()

	h, id := gateHarness(t, denied)
	h.run.authors = nil
	var dave config.Identity
	for _, i := range h.svc.cfg.Identities {
		if i.Slack == pDave {
			dave = i
		}
	}
	h.run.authors = []approvals.Author{{Login: dave.GitHub, ID: dave.GitHubID, As: "author"}}
	cmd, _ := commands.Parse("plan staging pr-1")
	h.run.head = "1123456789abcdef0123456789abcdef01234567"
	if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	id = h.openPlan(t)
	var author *approvals.AuthorError
	if err := h.svc.Override(ctx, pChannel, pDave, id); !errors.As(err, &author) {
		t.Fatalf("override by the change's author: err = %v, want an AuthorError", err)
	}

	h, id = gateHarness(t, denied)
	if err := h.svc.Approve(ctx, pChannel, pBob, id); !errors.Is(err, approvals.ErrPolicyDenied) {
		t.Fatalf("approve before the override: err = %v, want ErrPolicyDenied", err)
	}
	if err := h.svc.Override(ctx, pChannel, pBob, id); !errors.Is(err, approvals.ErrNotPolicyOwner) {
		t.Fatalf("override by an approver who is no owner: err = %v, want ErrNotPolicyOwner", err)
	}
	if err := h.svc.Override(ctx, pChannel, pDave, id); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Approve(ctx, pChannel, pBob, id); err != nil {
		t.Fatal(err)
	}
	h.svc.cfg.Projects[0].Environments[0].Policy.Owners = config.Who{Users: []string{pErin}} // dave is no owner now
	if err := h.svc.Approve(ctx, pChannel, pCarol, id); err != nil {
		t.Fatal(err)
	}
	if h.applied(id) {
		t.Fatal("applied on the override of someone who is no longer a policy owner")
	}
	p, _ := h.store.Get(ctx, id)
	if approvals.Overridden(p) || len(approvals.Approvers(p)) != 2 {
		t.Fatalf("after the re-check: overriders %v approvers %v", approvals.Overriders(p), approvals.Approvers(p))
	}
	if err := h.svc.Override(ctx, pChannel, pErin, id); err != nil {
		t.Fatal(err)
	}
	if !h.applied(id) {
		t.Fatal("not applied after a current owner's override completed the quorum")
	}
}

// flakyRequirements answers met for the first `met` calls, then what
// after says.
type flakyRequirements struct {
	calls, met int
	after      []runner.Unmet
	err        error
}

func (f *flakyRequirements) Requirements(context.Context, runner.Revision, []runner.Requirement) ([]runner.Unmet, error) {
	f.calls++
	if f.calls <= f.met {
		return nil, nil
	}
	return f.after, f.err
}

// A requirement that stops holding after the approvals — checked right
// before the apply — stops it: nothing applied, the plan pending with its
// approvals, and Approve again retries once GitHub's side holds. An error
// from GitHub stops it too.
func TestRequirementsCheckedAgainBeforeApply(t *testing.T) {
	ctx := context.Background()
	for name, fr := range map[string]*flakyRequirements{
		"dismissed":   {met: 2, after: []runner.Unmet{{Requirement: runner.RequireApproved, Reason: "the review was dismissed"}}},
		"GitHub down": {met: 2, err: fmt.Errorf("%w: 502", runner.ErrSource)},
	} {
		t.Run(name, func(t *testing.T) {
			h, id := gateHarness(t, approvals.Assessment{})
			h.svc.cfg.Projects[0].Environments[0].Requirements = []config.Requirement{config.RequireApproved}
			h.svc.o.Requirements = fr
			if err := h.svc.Approve(ctx, pChannel, pBob, id); err != nil {
				t.Fatal(err)
			}
			err := h.svc.Approve(ctx, pChannel, pCarol, id)
			if fr.err != nil && !errors.Is(err, runner.ErrSource) {
				t.Fatalf("second approval with GitHub down: err = %v, want ErrSource", err)
			}
			if h.applied(id) {
				t.Fatal("applied although GitHub's requirement no longer held")
			}
			p, _ := h.store.Get(ctx, id)
			if p.Status != approvals.StatusPending || len(approvals.Approvers(p)) != 2 {
				t.Fatalf("after the stopped apply: %s with %v", p.Status, approvals.Approvers(p))
			}
			fr.met, fr.after, fr.err = 1<<30, nil, nil
			if err := h.svc.Approve(ctx, pChannel, pCarol, id); err != nil {
				t.Fatal(err)
			}
			if !h.applied(id) {
				t.Fatal("Approve again did not retry the apply once the requirement held")
			}
		})
	}
}

// The config's requirement names are the ones the GitHub checker knows.
func TestRequirementNamesAgree(t *testing.T) {
	for _, r := range config.Requirements() {
		if !runner.Requirement(r).Valid() {
			t.Errorf("config accepts requirement %q, which runner does not know", r)
		}
	}
	if len(config.Requirements()) != 4 {
		t.Errorf("config knows %d requirements, runner 4", len(config.Requirements()))
	}
}

// staleGroups answers from a cache that still has people a group lost,
// unless asked for a fresh read.
type staleGroups struct{ cached, now map[string][]string }

func (g staleGroups) InAnyGroup(_ context.Context, user string, groups []string, fresh bool) (bool, error) {
	members := g.cached
	if fresh {
		members = g.now
	}
	for _, grp := range groups {
		if slices.Contains(members[grp], user) {
			return true, nil
		}
	}
	return false, nil
}

func (staleGroups) Name(_ context.Context, user string) string { return user }

// A break-glass token is minted on the approving click itself, so that
// click is decided on membership read now: someone just removed from the
// approvers (still in a cache) cannot let a token out.
func TestBreakGlassApprovalReadsMembershipNow(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	one := 1
	env := &h.svc.cfg.Projects[0].Environments[0]
	env.BreakGlass = &config.BreakGlass{OnCall: config.Who{Users: []string{pAlice}}, MaxTTL: config.Duration(time.Hour),
		Approvals: &one, Role: "twokey-staging-breakglass", Policies: []string{"staging-breakglass"}, Channel: "CSECURITY"}
	h.svc.dir = staleGroups{cached: map[string][]string{pGroup: {pBob}}, now: map[string][]string{pGroup: {}}}
	if err := h.svc.RequestGrant(ctx, pChannel, pAlice, GrantRequest{Project: "infra", Env: "staging", Duration: 30 * time.Minute,
		Reason: "db failover stuck"}); err != nil {
		t.Fatal(err)
	}
	var id string
	for gid := range h.store.grants {
		id = gid
	}
	if err := h.svc.ApproveGrant(ctx, "CSECURITY", pBob, id); !errors.Is(err, ErrNotGrantPeer) {
		t.Fatalf("approval by someone removed from the approvers: err = %v, want ErrNotGrantPeer", err)
	}
	if g, _ := h.store.GetGrant(ctx, id); g.Status != approvals.GrantRequested {
		t.Fatalf("grant is %s after a refused approval", g.Status)
	}
}
