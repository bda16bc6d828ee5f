package change

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
)

// Linker links a person to a GitHub account (GitHub's device flow: package
// ghlink behind an adapter).
type Linker interface {
	Start(ctx context.Context) (DeviceCode, error)
}

// DeviceCode is a pending link: the code to enter, where, until when, and
// how to wait for the answer.
type DeviceCode struct {
	UserCode, URL string
	Expires       time.Time
	// Wait returns the account once the person authorized; ErrLinkExpired
	// or ErrLinkDenied otherwise.
	Wait func(ctx context.Context) (approvals.Identity, error)
}

// Links stores links people made (approvals/redisstore).
type Links interface {
	Identities
	Link(ctx context.Context, user string, id approvals.Identity, at time.Time) error
	Unlink(ctx context.Context, user string) (bool, error)
}

// Errors of linking.
var (
	ErrNoLinking   = errors.New("GitHub linking is not set up here (github.oauth_client_id); ask the platform team to list you under identities in twokey's config")
	ErrLinkExpired = errors.New("the GitHub code expired before it was entered")
	ErrLinkDenied  = errors.New("the GitHub authorization was denied")
	ErrNotAdminLnk = errors.New("only twokey admins may unlink someone else")
)

// Link starts linking user's GitHub account: the code and URL go to them
// by direct message, and a tracked goroutine waits for the answer, stores
// the link, records it, and tells them.
func (s *Service) Link(ctx context.Context, channel, user string) error {
	if s.o.Linker == nil || s.o.Links == nil {
		return ErrNoLinking
	}
	// One link per person, changed only by an admin: otherwise an author
	// could re-link to another account of theirs right before approving.
	if cur, ok, err := s.identity(ctx, user); err != nil {
		return err
	} else if ok {
		s.tell(ctx, channel, user, fmt.Sprintf("You are already GitHub *%s* (account %d). To link another account, ask a twokey admin to `/tf unlink` you first.",
			Escape(cur.Login), cur.ID))
		return nil
	}
	code, err := s.o.Linker.Start(ctx)
	if err != nil {
		return err
	}
	if err := s.n.DM(ctx, user, fmt.Sprintf(":link: To link your GitHub account, open %s and enter the code *%s* (valid until %s). "+
		"twokey reads who you are once and keeps no GitHub token.", code.URL, code.UserCode, code.Expires.UTC().Format("15:04 MST"))); err != nil {
		return err
	}
	s.tell(ctx, channel, user, "I sent you a GitHub code by direct message.")
	if !s.Go(func(wctx context.Context) { s.finishLink(wctx, user, code) }) {
		return errors.New("twokey is shutting down; try again in a minute")
	}
	return nil
}

func (s *Service) finishLink(ctx context.Context, user string, code DeviceCode) {
	id, err := code.Wait(ctx)
	switch {
	case errors.Is(err, ErrLinkExpired):
		_ = s.n.DM(ctx, user, ":hourglass: The GitHub code expired before it was entered; nothing was linked. Run `/tf link github` again.")
		return
	case errors.Is(err, ErrLinkDenied):
		_ = s.n.DM(ctx, user, ":no_entry: The GitHub authorization was denied; nothing was linked.")
		return
	case err != nil:
		s.log.Warn("github link failed", "user", user, "err", err)
		_ = s.n.DM(ctx, user, "GitHub could not be reached, so nothing was linked. Run `/tf link github` again.")
		return
	}
	if err := s.o.Links.Link(ctx, user, id, s.o.Now()); err != nil {
		s.log.Error("store github link", "user", user, "err", err)
		_ = s.n.DM(ctx, user, "The link could not be stored, so nothing was linked. Run `/tf link github` again.")
		return
	}
	_ = s.record(ctx, audit.IdentityLinked, user, nil, map[string]string{"github_login": id.Login, "github_id": fmt.Sprint(id.ID)})
	_ = s.n.DM(ctx, user, fmt.Sprintf(":white_check_mark: Linked to GitHub *%s* (account %d).", Escape(id.Login), id.ID))
}

// WhoAmI tells user which GitHub account they are linked to.
func (s *Service) WhoAmI(ctx context.Context, channel, user string) error {
	if id, ok := s.cfg.IdentityOf(user); ok {
		s.tell(ctx, channel, user, fmt.Sprintf("You are GitHub *%s* (account %d), as twokey's config lists.", Escape(id.GitHub), id.GitHubID))
		return nil
	}
	id, ok, err := s.identity(ctx, user)
	switch {
	case err != nil:
		return err
	case !ok:
		s.tell(ctx, channel, user, "You have no linked GitHub account. Link one with `/tf link github`.")
	default:
		s.tell(ctx, channel, user, fmt.Sprintf("You are GitHub *%s* (account %d), linked with `/tf link github`.", Escape(id.Login), id.ID))
	}
	return nil
}

// Unlink drops target's link; only admins may.
func (s *Service) Unlink(ctx context.Context, channel, user, target string) error {
	ok, err := s.includes(ctx, user, s.cfg.Admins)
	if !ok {
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMembership, err)
		}
		return ErrNotAdminLnk
	}
	if s.o.Links == nil {
		return ErrNoLinking
	}
	had, err := s.o.Links.Unlink(ctx, target)
	if err != nil {
		return err
	}
	if !had {
		s.tell(ctx, channel, user, fmt.Sprintf("<@%s> had no GitHub link made with `/tf link github`.", target))
		return nil
	}
	_ = s.record(ctx, audit.IdentityUnlinked, user, nil, map[string]string{"user": target})
	s.tell(ctx, channel, user, fmt.Sprintf("<@%s>'s GitHub link is gone.", target))
	return nil
}
