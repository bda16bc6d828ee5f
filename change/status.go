package change

import (
	"context"
	"fmt"
	"strings"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// status answers `/tf status [project] [env]`: each environment's lock and
// open plans, with age and approvals. Plans found past their TTL are voided
// on the way.
func (s *Service) Status(ctx context.Context, channel, user string, cmd commands.Status) error {
	if cmd.Env != "" {
		if _, _, err := s.cfg.Resolve(cmd.Project, cmd.Env); err != nil {
			return err
		}
	}
	plans, err := s.o.Store.Active(ctx)
	if err != nil {
		return err
	}
	now := s.o.Now()
	var out strings.Builder
	for _, proj := range s.cfg.Projects {
		if cmd.Project != "" && proj.Name != cmd.Project {
			continue
		}
		for _, env := range proj.Environments {
			if cmd.Env != "" && env.Name != cmd.Env {
				continue
			}
			key := runner.LockKey(proj.Name, env.Name)
			h, held, err := s.o.Locks.Holder(ctx, key)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "*%s*: ", key)
			if held {
				fmt.Fprintf(&out, ":lock: locked by <@%s> for %s since %s (%s, fence %d)\n",
					h.User, h.What(), h.Since.UTC().Format("15:04 MST"), Ago(now, h.Since), h.Fence)
			} else {
				out.WriteString("free\n")
			}
			if recent, err := s.o.Promos.RecentApplied(ctx, proj.Name, env.Name, 3); err == nil && len(recent) > 0 {
				var shas []string
				for _, a := range recent {
					shas = append(shas, fmt.Sprintf("`%s` %s ago", Short(a.SHA), Ago(now, a.At)))
				}
				fmt.Fprintf(&out, "    applied: %s\n", strings.Join(shas, ", "))
			}
			for _, p := range plans {
				if p.Project != proj.Name || p.Env != env.Name {
					continue
				}
				if approvals.Expired(p, now) {
					s.expire(ctx, p)
					continue
				}
				p := s.o.Notary.Signed(p)
				fmt.Fprintf(&out, "    • %s `%s` plan `%s` requested by <@%s>: %s, %d of %d approvals, %s old",
					Label(p), Short(p.SHA), p.ID, p.Requester, StatusWords(p.Status), len(approvals.Approvers(p)), p.Required, Ago(now, p.CreatedAt))
				if p.Status == approvals.StatusPending {
					out.WriteString(", expires " + ExpiresIn(now, p.ExpiresAt))
				}
				out.WriteString("\n")
			}
		}
	}
	if out.Len() == 0 {
		out.WriteString("No environments match.")
	}
	grants, err := s.o.Grants.OpenGrants(ctx)
	if err != nil {
		return err
	}
	var lines []string
	for _, g := range grants {
		if (cmd.Project != "" && g.Project != cmd.Project) || (cmd.Env != "" && g.Env != cmd.Env) {
			continue
		}
		line := fmt.Sprintf("    • `%s` %s/%s by <@%s>: %s", g.ID, g.Project, g.Env, g.Requester, GrantWords(g))
		switch {
		case g.Status == approvals.GrantActive:
			line += ", expires " + ExpiresIn(now, g.ExpiresAt)
		case g.Status == approvals.GrantEnded:
			line += fmt.Sprintf(" (%d of %d reviews), ended %s ago", len(g.Reviews), approvals.ReviewsNeeded, Ago(now, g.EndedAt))
		}
		lines = append(lines, line)
	}
	if len(lines) > 0 {
		out.WriteString("\n*Break-glass*\n" + strings.Join(lines, "\n") + "\n")
	}
	s.tell(ctx, channel, user, Clip(out.String(), MaxSection))
	return nil
}
