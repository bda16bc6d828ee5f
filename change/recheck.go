package change

import (
	"context"
	"errors"
	"fmt"

	"github.com/twokey/twokey/approvals"
)

// recheck reads the rights of every approver who counts on a plan with
// quorum fresh — group membership from the source, not a cache, and the
// environment's authors rules — right before the apply is granted. Anyone
// who lost the right since clicking no longer counts: their approval is
// withdrawn, the thread says so, and the plan waits for others. It reports
// whether the plan still has its quorum. An unreadable membership stops
// the apply (fail closed) and keeps the approvals.
func (s *Service) recheck(ctx context.Context, p approvals.Plan) (bool, error) {
	_, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return false, err
	}
	var gone []string
	for _, u := range approvals.Approvers(s.o.Notary.Signed(p)) {
		ok, err := s.dir.IncludesNow(ctx, u, env.Approvers)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrMembership, err)
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
	for _, u := range gone { // they may approve again once they have the right back
		if err := s.o.Dedup.Forget(context.WithoutCancel(ctx), clickKey(p.ID, decideApprove, u, p.Attempts)); err != nil {
			s.log.Warn("forget click", "plan_id", p.ID, "user", u, "err", err)
		}
	}
	s.post(ctx, p, fmt.Sprintf(":warning: %s may no longer approve in %s (checked right before the apply), so that approval no longer counts. "+
		"Nothing was applied; the plan needs %d more approval(s).", Mentions(gone), Escape(p.Env), approvals.Missing(s.o.Notary.Signed(p))))
	s.refresh(ctx, p)
	return false, nil
}
