package change

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
)

// recheck reads the rights of every approver and policy owner who counts
// on a plan with quorum fresh — group membership from the source, not a
// cache, including the policy groups their approvals count for, and the
// environment's authors rules — right before the apply is granted. Anyone
// who lost the right since clicking no longer counts: their approval is
// withdrawn, the thread says so, and the plan waits for others. It reports
// whether the plan still has its quorum. An unreadable membership stops
// the apply (fail closed) and keeps the approvals.
func (s *Service) recheck(ctx context.Context, p approvals.Plan) (bool, error) {
	proj, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return false, err
	}
	pol := proj.PolicyFor(env)
	signed := s.o.Notary.Signed(p)
	// Each person, with every list they must still be in.
	lists := map[string][]config.Who{}
	var people []string
	need := func(u string, who config.Who) {
		if _, seen := lists[u]; !seen {
			people = append(people, u)
		}
		lists[u] = append(lists[u], who)
	}
	for _, u := range approvals.Approvers(signed) {
		need(u, env.Approvers)
	}
	for _, a := range signed.Approvals {
		for _, g := range a.Groups {
			if who, ok := pol.GroupNamed(g); ok && slices.Contains(approvals.Approvers(signed), a.User) {
				need(a.User, who)
			}
		}
	}
	for _, u := range approvals.Overriders(signed) {
		var owners config.Who
		if pol != nil {
			owners = pol.Owners
		}
		need(u, owners)
	}
	var gone []string
	for _, u := range people {
		ok := true
		for _, who := range lists[u] {
			in, err := s.includesNow(ctx, u, who)
			if err != nil {
				return false, fmt.Errorf("%w: %w", ErrMembership, err)
			}
			ok = ok && in
		}
		if ok {
			rule, err := s.approverRule(ctx, env, u)
			if err != nil {
				return false, err
			}
			ok = rule(p) == nil
		}
		if !ok {
			gone = append(gone, u)
		}
	}
	if len(gone) == 0 {
		return true, nil
	}
	s.log.Warn("approvers lost their rights before the apply; their approvals no longer count",
		"plan_id", p.ID, "env", p.Project+"/"+p.Env, "user", gone)
	p, err = s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		return approvals.Withdraw(cur, gone, s.o.Now())
	})
	if err != nil && !errors.Is(err, approvals.ErrUnchanged) {
		return false, err
	}
	for _, u := range gone { // they may decide again once they have the right back
		for _, d := range []decision{decideApprove, decideOverride} {
			if err := s.o.Dedup.Forget(context.WithoutCancel(ctx), clickKey(p.ID, d, u, p.Attempts)); err != nil {
				s.log.Warn("forget click", "plan_id", p.ID, "user", u, "err", err)
			}
		}
	}
	s.post(ctx, p, fmt.Sprintf(":warning: %s may no longer approve in %s (checked right before the apply), so that decision no longer counts. "+
		"Nothing was applied; the plan needs %s.", Mentions(gone), Escape(p.Env), Needs(s.o.Notary.Signed(p))))
	s.refresh(ctx, p)
	return false, nil
}
