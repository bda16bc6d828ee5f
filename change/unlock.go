package change

import (
	"context"
	"fmt"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// unlock frees an environment by force, for admins: its open plans end
// first (so none of them can move on), then the lock is deleted, and the
// channel is told who did it and why.
func (s *Service) Unlock(ctx context.Context, channel, user string, cmd commands.Unlock) error {
	proj, env, err := s.cfg.Resolve(cmd.Project, cmd.Env)
	if err != nil {
		return err
	}
	ok, derr := s.includes(ctx, user, s.cfg.Admins)
	if !ok && derr != nil {
		return fmt.Errorf("%w: %w", ErrMembership, derr)
	}
	if !ok {
		return ErrNotAdmin
	}
	key := runner.LockKey(proj.Name, env.Name)
	h, held, err := s.o.Locks.Holder(ctx, key)
	if err != nil {
		return err
	}
	plans, err := s.o.Store.Active(ctx)
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("unlocked by <@%s>: %s", user, Escape(cmd.Reason))
	for _, p := range plans {
		if p.Project != proj.Name || p.Env != env.Name {
			continue
		}
		to := approvals.StatusInvalidated
		if p.Status == approvals.StatusApplying {
			to = approvals.StatusInterrupted // its lease refresh fails next, and terraform gets SIGINT
		}
		s.finish(ctx, p, to, reason)
	}
	if _, _, err := s.o.Locks.ForceRelease(ctx, key); err != nil {
		return err
	}
	text := fmt.Sprintf(":unlock: <@%s> unlocked *%s*: %s (it was not locked)", user, key, Escape(cmd.Reason))
	if held {
		text = fmt.Sprintf(":unlock: <@%s> unlocked *%s* — held by <@%s> for %s since %s, fence %d: %s",
			user, key, h.User, h.What(), h.Since.UTC().Format("15:04 MST"), h.Fence, Escape(cmd.Reason))
	}
	s.log.Warn("environment unlocked by force", "env", key, "user", user, "held", held, "holder", h.User, "fence", h.Fence, "reason", cmd.Reason)
	_ = s.record(ctx, audit.Unlock, user, &approvals.Plan{Project: proj.Name, Env: env.Name, Fence: h.Fence},
		map[string]string{"holder": h.User, "holder_plan": h.PlanID, "reason": cmd.Reason, "held": fmt.Sprint(held)})
	if err := s.n.Note(ctx, Thread{Channel: channel}, text); err != nil {
		return fmt.Errorf("post unlock notice: %w", err)
	}
	return nil
}
