package change

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
)

// Identities answers who a Slack user is on GitHub: the links people made
// themselves. Identities listed in the config come first.
type Identities interface {
	// Identity returns user's linked GitHub account; ok is false when
	// there is none. An error means the link could not be read.
	Identity(ctx context.Context, user string) (id approvals.Identity, ok bool, err error)
}

// ErrIdentity: the approver's GitHub link could not be read, so whether
// they wrote the change is unknown and the click is not counted.
var ErrIdentity = errors.New("could not read the approver's linked GitHub account; refusing to decide")

// identity returns user's GitHub identity: from the config's identities,
// else from the links people made.
func (s *Service) identity(ctx context.Context, user string) (approvals.Identity, bool, error) {
	if id, ok := s.cfg.IdentityOf(user); ok {
		return approvals.Identity{Login: id.GitHub, ID: id.GitHubID, Emails: id.Emails}, true, nil
	}
	src := s.o.Identities
	if src == nil && s.o.Links != nil {
		src = s.o.Links
	}
	if src == nil {
		return approvals.Identity{}, false, nil
	}
	id, ok, err := src.Identity(ctx, user)
	if err != nil {
		return approvals.Identity{}, false, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return id, ok, nil
}

// approverRule is the environment's authors rule for one approver, to
// run on the plan as stored (whose seal covers its authors).
func (s *Service) approverRule(ctx context.Context, env *config.Environment, user string) (func(approvals.Plan) error, error) {
	exclude, linked := env.ExcludesAuthors(), env.RequiresLinkedApprovers()
	if !exclude && !linked {
		return func(approvals.Plan) error { return nil }, nil
	}
	id, ok, err := s.identity(ctx, user)
	if err != nil {
		return nil, err
	}
	return func(p approvals.Plan) error { return approvals.CheckApprover(p, id, ok, exclude, linked) }, nil
}

// includes reports whether user is listed in who, by ID or through one of
// its groups (the Directory, its cache allowed).
func (s *Service) includes(ctx context.Context, user string, who config.Who) (bool, error) {
	return s.member(ctx, user, who, false)
}

// includesNow is includes with groups read from the source now.
func (s *Service) includesNow(ctx context.Context, user string, who config.Who) (bool, error) {
	return s.member(ctx, user, who, true)
}

func (s *Service) member(ctx context.Context, user string, who config.Who, fresh bool) (bool, error) {
	if slices.Contains(who.Users, user) {
		return true, nil
	}
	if len(who.Groups) == 0 {
		return false, nil
	}
	return s.dir.InAnyGroup(ctx, user, who.Groups, fresh)
}
