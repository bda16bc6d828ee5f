package change

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Requirements checks an environment's GitHub-side requirements (approved,
// mergeable, undiverged, codeowners) against GitHub as it is now;
// *ghsource.Source is one. An error means GitHub could not say: nothing
// is approved or applied then.
type Requirements interface {
	Requirements(ctx context.Context, rev runner.Revision, reqs []runner.Requirement) ([]runner.Unmet, error)
}

// ErrRequirements: the environment's GitHub requirements do not hold; a
// RequirementsError says which.
var ErrRequirements = errors.New("GitHub requirements not met")

// RequirementsError lists the requirements a plan does not meet.
type RequirementsError struct{ Unmet []runner.Unmet }

func (e *RequirementsError) Unwrap() error { return ErrRequirements }

func (e *RequirementsError) Error() string {
	var b strings.Builder
	b.WriteString(ErrRequirements.Error() + ": ")
	for i, u := range e.Unmet {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(u.String())
	}
	return b.String()
}

// unmet checks env's requirements for the revision a plan planned: at plan
// time (to show them), at each Approve click (refused while any is unmet)
// and right before the apply. No requirements: nothing to check.
func (s *Service) unmet(ctx context.Context, env *config.Environment, rev runner.Revision) ([]runner.Unmet, error) {
	if len(env.Requirements) == 0 {
		return nil, nil
	}
	if s.o.Requirements == nil {
		return nil, fmt.Errorf("%w: %s has requirements but twokey has no GitHub checker for them", runner.ErrSource, env.Name)
	}
	reqs := make([]runner.Requirement, len(env.Requirements))
	for i, r := range env.Requirements {
		reqs[i] = runner.Requirement(r)
	}
	return s.o.Requirements.Requirements(ctx, rev, reqs)
}

// planRevision is the revision a plan planned, as its seal records it.
func planRevision(proj *config.Project, p approvals.Plan) runner.Revision {
	return runner.Revision{Repo: proj.Repo, Ref: p.Ref, PR: p.PR, SHA: p.SHA, Authors: p.Authors}
}

// noteUnmet records what the plan's requirements lack now, for its
// message, when that changed.
func (s *Service) noteUnmet(ctx context.Context, p approvals.Plan, unmet []runner.Unmet) approvals.Plan {
	words := unmetWords(unmet)
	if slices.Equal(words, p.Unmet) {
		return p
	}
	next, err := s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		cur.Unmet = words
		return cur, nil
	})
	if err != nil {
		s.log.Warn("record unmet requirements", "plan_id", p.ID, "err", err)
		return p
	}
	s.refresh(ctx, next)
	return next
}

func unmetWords(unmet []runner.Unmet) []string {
	var out []string
	for _, u := range unmet {
		out = append(out, u.String())
	}
	return out
}
