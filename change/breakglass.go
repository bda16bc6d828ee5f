package change

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Break-glass: an on-call engineer asks for a time-boxed Vault token; at most
// one other person agrees; the token goes, response-wrapped, to the
// requester's DMs; the security channel sees every step; when the token is
// gone a drift check runs and two people review. None of it touches plans
// or environment locks.

// GrantRequest is a break-glass request, from a command or a form.
type GrantRequest struct {
	Project, Env string
	Duration     time.Duration
	Reason       string
	Incident     string // a link, or ""
}

// checkGrantRequest resolves the environment and checks that user may ask
// for this: break-glass configured, on call, within the cap, with a reason.
func (s *Service) CheckGrantRequest(ctx context.Context, user string, r GrantRequest) error {
	_, _, err := s.checkGrantRequest(ctx, user, r)
	return err
}

func (s *Service) checkGrantRequest(ctx context.Context, user string, r GrantRequest) (*config.Project, *config.Environment, error) {
	proj, env, err := s.cfg.Resolve(r.Project, r.Env)
	if err != nil {
		return nil, nil, err
	}
	bg := env.BreakGlass
	if bg == nil {
		return nil, nil, fmt.Errorf("%w: %s/%s", ErrNoBreakGlass, proj.Name, env.Name)
	}
	onCall, derr := s.includes(ctx, user, bg.OnCall)
	if !onCall && derr != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrMembership, derr)
	}
	if !onCall {
		return nil, nil, ErrNotOnCall
	}
	if r.Duration > bg.MaxTTL.D() {
		return nil, nil, &CapError{Env: env.Name, Asked: r.Duration, Cap: bg.MaxTTL.D()}
	}
	if strings.TrimSpace(r.Reason) == "" {
		return nil, nil, ErrNoReason
	}
	return proj, env, nil
}

// breakGlass answers `/tf breakglass <env> <duration> <reason>`.
func (s *Service) BreakGlass(ctx context.Context, channel, user string, cmd commands.BreakGlass) error {
	return s.RequestGrant(ctx, channel, user, GrantRequest{Project: cmd.Project, Env: cmd.Env, Duration: cmd.Duration,
		Reason: cmd.Reason, Incident: cmd.Incident})
}

// requestGrant creates a grant, announces it in the security channel and,
// where the environment needs no approval, creates the token at once.
func (s *Service) RequestGrant(ctx context.Context, channel, user string, r GrantRequest) error {
	proj, env, err := s.checkGrantRequest(ctx, user, r)
	if err != nil {
		return err
	}
	bg := env.BreakGlass
	g, err := approvals.NewBreakGlass(approvals.GrantRequest{
		ID: newGrantID(), Project: proj.Name, Env: env.Name, Requester: user, Reason: strings.TrimSpace(r.Reason),
		Incident: r.Incident, Duration: r.Duration, Required: bg.ApprovalsNeeded(), Policies: bg.Policies,
		Channel: bg.Channel, Minter: s.instance,
	}, s.o.Now())
	if err != nil {
		return err
	}
	if g, err = s.o.Notary.SealGrant(g); err != nil {
		return err
	}
	if g, err = s.o.Grants.CreateGrant(ctx, g); err != nil {
		return err
	}
	log := s.log.With("grant", g.ID, "env", g.Project+"/"+g.Env, "user", user)
	log.Warn("break-glass requested", "duration", g.Duration, "approvals", g.Required)
	if err := s.recordGrant(ctx, audit.StageRequested, user, g, map[string]string{"reason": Clip(g.Reason, 500),
		"incident": g.Incident, "duration": g.Duration.String(), "approvals": fmt.Sprint(g.Required),
		"policies": strings.Join(g.Policies, ",")}); err != nil {
		// Nothing may happen unrecorded: the request ends here.
		_, _ = s.mutateGrant(ctx, g.ID, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
			if g.Status == approvals.GrantMinting {
				return approvals.EndGrant(g, approvals.OutcomeFailed, "", "the audit record could not be written", s.o.Now())
			}
			return approvals.EndGrant(g, approvals.OutcomeLapsed, "", "the audit record could not be written", s.o.Now())
		})
		return fmt.Errorf("%w: %w", runner.ErrAudit, err)
	}
	g = s.announce(ctx, g)
	if g.Status == approvals.GrantMinting {
		s.tell(ctx, channel, user, fmt.Sprintf(":rotating_light: Break-glass `%s` for *%s*: self-service here, so your token "+
			"is on its way to your direct messages. Everyone in <#%s> can see it, and it will be reviewed afterwards.",
			g.ID, g.Env, g.Channel))
		s.mint(ctx, g)
		return nil
	}
	s.tell(ctx, channel, user, fmt.Sprintf(":rotating_light: Break-glass `%s` for *%s* is waiting for one approval in <#%s> "+
		"(another on-call engineer or an approver). Your token will come by direct message.", g.ID, g.Env, g.Channel))
	return nil
}

// approveGrant counts the one approval a request needs and creates the token.
func (s *Service) ApproveGrant(ctx context.Context, channel, user, id string) (err error) {
	g, env, err := s.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	key := clickKey(id, decideGrantApprove, user, 0)
	if !s.First(ctx, key, channel, user) {
		return nil
	}
	defer s.forgetOnError(ctx, key, &err)
	authorized, err := s.mayApproveGrant(ctx, user, env)
	if err != nil && user != g.Requester {
		return err
	}
	g, err = s.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if err := s.o.Notary.CheckGrantSeal(cur); err != nil {
			return cur, err
		}
		return approvals.ApproveGrant(cur, user, authorized, s.instance, s.o.Now())
	})
	switch {
	case errors.Is(err, approvals.ErrForged):
		s.forgedGrant(ctx, g, err)
		return err
	case errors.Is(err, approvals.ErrRequestLapsed):
		s.lapse(ctx, g)
		return err
	case errors.Is(err, approvals.ErrSelfApproval):
		return ErrSelfGrant
	case errors.Is(err, approvals.ErrNotAuthorized):
		return ErrNotGrantPeer
	case err != nil:
		return err
	}
	s.log.Warn("break-glass approved", "grant", g.ID, "approver", user)
	_ = s.recordGrant(ctx, audit.StageApproved, user, g, nil)
	s.refreshGrant(ctx, g)
	s.mint(ctx, g)
	return nil
}

// denyGrant refuses a request (or the requester withdraws it).
func (s *Service) DenyGrant(ctx context.Context, channel, user, id string) error {
	g, env, err := s.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	authorized := false
	if user != g.Requester {
		if authorized, err = s.mayApproveGrant(ctx, user, env); err != nil {
			return err
		}
	}
	g, err = s.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.DenyGrant(cur, user, authorized, s.o.Now())
	})
	if errors.Is(err, approvals.ErrNotAuthorized) {
		return ErrNotGrantPeer
	}
	if err != nil {
		return err
	}
	_ = s.recordGrant(ctx, audit.StageDenied, user, g, map[string]string{"note": g.Note})
	s.refreshGrant(ctx, g)
	if user != g.Requester {
		s.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass request `%s` for *%s* was denied by <@%s>.", g.ID, g.Env, user))
	}
	return nil
}

// mayApproveGrant: another on-call engineer of the environment, or one of
// its approvers, read from the source now — the token is minted on this
// very click, so a membership cached from before a removal must not count.
// An error means membership could not be read.
func (s *Service) mayApproveGrant(ctx context.Context, user string, env *config.Environment) (bool, error) {
	for _, who := range []config.Who{env.BreakGlass.OnCall, env.Approvers} {
		ok, err := s.includesNow(ctx, user, who)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrMembership, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// anyOf reports whether user is in any of the lists, reading them in
// order; an error (ErrMembership) means one could not be read before user
// was found.
func (s *Service) anyOf(ctx context.Context, user string, lists ...config.Who) (bool, error) {
	for _, who := range lists {
		ok, err := s.includes(ctx, user, who)
		if ok {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrMembership, err)
		}
	}
	return false, nil
}

// mint creates the token of a grant this process holds in minting, and
// delivers it. Any failure ends the grant as failed, with no token left.
func (s *Service) mint(ctx context.Context, g approvals.BreakGlass) {
	log := s.log.With("grant", g.ID, "env", g.Project+"/"+g.Env)
	if err := s.o.Notary.CheckGrantSeal(g); err != nil {
		s.forgedGrant(ctx, g, err)
		s.failGrant(ctx, g, "its record in Redis is not signed by twokey", nil)
		return
	}
	proj, env, err := s.cfg.Resolve(g.Project, g.Env)
	if err != nil || env.BreakGlass == nil {
		s.failGrant(ctx, g, "the environment's break-glass configuration is gone", nil)
		return
	}
	target, err := s.o.Target(proj.Name, env.Name)
	if err != nil {
		s.failGrant(ctx, g, "the environment's configuration is unreadable", nil)
		return
	}
	w, err := s.o.Runner.BreakGlass(ctx, runner.BreakGlassJob{GrantID: g.ID, TTL: g.Duration, Target: target})
	if err != nil {
		log.Error("break-glass token not created", "err", err)
		s.failGrant(ctx, g, "the token could not be created: "+s.grantError(err), nil)
		return
	}
	g, err = s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.Minted(cur, w.Accessor, w.WrapAccessor, w.Expires, w.WrapExpires, s.o.Now())
	})
	if err != nil {
		// The grant moved on without us (it stalled and was ended): the token must not live.
		log.Error("break-glass token created for a grant that moved on; revoking it", "err", err)
		_ = s.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, w.Accessor, w.WrapAccessor)
		return
	}
	log.Warn("break-glass token created", "accessor", w.Accessor, "expires", w.Expires)
	_ = s.recordGrant(ctx, audit.StageMinted, "", g, map[string]string{"accessor": w.Accessor, "expires": w.Expires.UTC().Format(time.RFC3339),
		"wrap_expires": w.WrapExpires.UTC().Format(time.RFC3339)})
	s.deliver(ctx, g, w, env.BreakGlass.Role)
}

// deliverAttempts bounds how often a token's DM is tried.
const deliverAttempts = 4

// deliver sends the wrapping token to the requester's DMs. Before every
// attempt it asks Vault whether the wrapping token is still unused and is
// the one twokey created: if not, someone else got to it first, and the
// token is revoked as compromised.
func (s *Service) deliver(ctx context.Context, g approvals.BreakGlass, w runner.Wrapped, role string) {
	log := s.log.With("grant", g.ID)
	if s.o.Wrapping == nil {
		s.failGrant(ctx, g, "twokey cannot check wrapping tokens, so it delivers none", &w)
		return
	}
	var lastErr error
	for attempt := range deliverAttempts {
		if attempt > 0 && !pause(ctx, time.Duration(attempt)*time.Second) {
			lastErr = ctx.Err()
			break
		}
		info, err := s.o.Wrapping.LookupWrapping(ctx, w.WrapToken)
		switch {
		case errors.Is(err, runner.ErrWrapping):
			s.compromised(ctx, g, "", "its wrapping token was unwrapped before it reached the requester")
			return
		case err != nil:
			lastErr = err
			continue
		case info.CreationPath != "auth/token/create/"+role:
			s.compromised(ctx, g, "", fmt.Sprintf("its wrapping token came from %q, not from the break-glass role", info.CreationPath))
			return
		}
		dm, err := s.n.DeliverToken(ctx, g, w)
		if err != nil {
			lastErr = err
			log.Warn("deliver break-glass token", "attempt", attempt+1, "err", err)
			continue
		}
		g, err = s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
			cur.Delivered, cur.DMChannel, cur.DMTS, cur.UpdatedAt = true, dm.Channel, dm.TS, s.o.Now()
			return cur, nil
		})
		if err != nil {
			log.Error("record break-glass delivery", "err", err)
		}
		_ = s.recordGrant(ctx, audit.StageDelivered, "", g, map[string]string{"wrap_accessor": w.WrapAccessor})
		s.refreshGrant(ctx, g)
		return
	}
	log.Error("break-glass token not delivered; revoking it", "err", lastErr)
	s.failGrant(ctx, g, "the token could not be delivered", &w)
}

// failGrant ends a grant as failed, revoking its token if it has one.
func (s *Service) failGrant(ctx context.Context, g approvals.BreakGlass, note string, w *runner.Wrapped) {
	if w != nil {
		if err := s.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, w.Accessor, w.WrapAccessor); err != nil {
			s.log.Error("revoke an undelivered break-glass token; it expires by its TTL", "grant", g.ID, "err", err)
		}
	}
	g, err := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeFailed, "", note, s.o.Now())
	})
	if err != nil {
		s.log.Error("end failed break-glass grant", "grant", g.ID, "err", err)
		return
	}
	_ = s.recordGrant(ctx, audit.StageFailed, "", g, map[string]string{"note": note})
	s.refreshGrant(ctx, g)
	s.dmText(ctx, g.Requester, fmt.Sprintf(":x: Break-glass `%s` for *%s* failed: %s. No token is usable; ask again.", g.ID, g.Env, note))
}

// compromised revokes a grant whose wrapping token someone else unwrapped,
// and tells the requester and the security channel.
func (s *Service) compromised(ctx context.Context, g approvals.BreakGlass, user, why string) {
	err := s.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, g.Accessor, g.WrapAccessor)
	g, merr := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeCompromised, user, why, s.o.Now())
	})
	if merr != nil {
		s.log.Error("end compromised break-glass grant", "grant", g.ID, "err", merr)
		return
	}
	s.log.Error("break-glass token compromised", "grant", g.ID, "why", why, "revoked", err == nil)
	_ = s.recordGrant(ctx, audit.StageCompromised, user, g, map[string]string{"note": why, "revoked": fmt.Sprint(err == nil)})
	s.refreshGrant(ctx, g)
	revoked := "It was revoked."
	if err != nil {
		revoked = "Revoking it failed; it dies at " + g.ExpiresAt.UTC().Format("15:04 MST") + "."
	}
	s.postGrant(ctx, g, fmt.Sprintf(":rotating_light: *Compromised*: %s. %s <@%s>, ask again if you still need access.", why, revoked, g.Requester))
	s.dmText(ctx, g.Requester, fmt.Sprintf(":rotating_light: Your break-glass token `%s` was compromised: %s. %s "+
		"The security channel <#%s> has been told.", g.ID, why, revoked, g.Channel))
}

// unwrapFailed answers the requester's "Unwrap failed" click: if Vault says
// the wrapping token is gone before its time, someone else unwrapped it.
func (s *Service) UnwrapFailed(ctx context.Context, channel, user, id string) error {
	g, err := s.getGrant(ctx, id)
	if err != nil {
		return err
	}
	if user != g.Requester {
		return ErrNotRequester
	}
	if g.Status != approvals.GrantActive {
		s.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` is %s already.", g.ID, GrantWords(g)))
		return nil
	}
	alive, err := s.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.WrapAccessor)
	if err != nil {
		return err
	}
	switch {
	case alive:
		s.tell(ctx, channel, user, "Vault says the wrapping token is still unused: copy the whole command again, "+
			"and check that `VAULT_ADDR` points at "+s.cfg.Vault.Address+".")
	case s.o.Now().Before(g.WrapExpires):
		s.compromised(ctx, g, user, fmt.Sprintf("<@%s> could not unwrap it, and Vault says its wrapping token was already used", user))
	default:
		s.failGrant(ctx, g, "the wrapping token expired before it was unwrapped", &runner.Wrapped{Accessor: g.Accessor, WrapAccessor: g.WrapAccessor})
	}
	return nil
}

// revokeGrant answers `/tf breakglass revoke <id>`.
func (s *Service) RevokeGrant(ctx context.Context, channel, user string, cmd commands.BreakGlassRevoke) error {
	g, env, err := s.grantEnv(ctx, cmd.ID)
	if err != nil {
		return err
	}
	if user != g.Requester {
		ok, err := s.anyOf(ctx, user, env.BreakGlass.OnCall, env.Approvers, s.cfg.Admins)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNoRevoke
		}
	}
	switch g.Status {
	case approvals.GrantRequested:
		return s.DenyGrant(ctx, channel, user, g.ID)
	case approvals.GrantMinting:
		return ErrGrantMinting
	case approvals.GrantEnded:
		s.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` has ended already (%s).", g.ID, GrantWords(g)))
		return nil
	}
	if err := s.o.Runner.RevokeBreakGlass(ctx, g.Project, g.Env, g.ID, g.Accessor, g.WrapAccessor); err != nil {
		return err
	}
	g, err = s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeRevoked, user, "", s.o.Now())
	})
	if err != nil {
		return err
	}
	gone := s.confirmGone(ctx, g)
	s.log.Warn("break-glass revoked", "grant", g.ID, "by", user, "confirmed", gone)
	_ = s.recordGrant(ctx, audit.StageRevoked, user, g, map[string]string{"confirmed_gone": fmt.Sprint(gone)})
	s.refreshGrant(ctx, g)
	s.postGrant(ctx, g, fmt.Sprintf(":lock: Revoked by <@%s>. %s", user, goneWords(gone)))
	if user != g.Requester {
		s.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass token `%s` was revoked by <@%s>.", g.ID, user))
	}
	s.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` revoked. %s", g.ID, goneWords(gone)))
	s.Go(func(ctx context.Context) { s.driftCheck(ctx, g) })
	return nil
}

// confirmGone asks Vault whether the grant's token is gone, revoking it if
// it is not; it reports whether Vault confirmed.
func (s *Service) confirmGone(ctx context.Context, g approvals.BreakGlass) bool {
	alive, err := s.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.Accessor)
	if err == nil && alive {
		_ = s.o.Runner.RevokeBreakGlass(ctx, g.Project, g.Env, g.ID, g.Accessor)
		alive, err = s.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.Accessor)
	}
	if err != nil {
		s.log.Warn("could not confirm a break-glass token is gone", "grant", g.ID, "err", err)
		return false
	}
	return !alive
}

func goneWords(confirmed bool) string {
	if confirmed {
		return "Vault confirms the token is gone."
	}
	return ":warning: Vault could not confirm the token is gone; it dies by its TTL."
}

// grantEnv reads a grant and its environment's configuration.
func (s *Service) grantEnv(ctx context.Context, id string) (approvals.BreakGlass, *config.Environment, error) {
	g, err := s.getGrant(ctx, id)
	if err != nil {
		return g, nil, err
	}
	_, env, err := s.cfg.Resolve(g.Project, g.Env)
	if err != nil {
		return g, nil, err
	}
	if env.BreakGlass == nil {
		return g, nil, fmt.Errorf("%w: %s/%s", ErrNoBreakGlass, g.Project, g.Env)
	}
	return g, env, nil
}

func (s *Service) getGrant(ctx context.Context, id string) (approvals.BreakGlass, error) {
	g, err := s.o.Grants.GetGrant(ctx, id)
	if errors.Is(err, approvals.ErrNotFound) {
		return g, ErrUnknownGrant
	}
	return g, err
}

// mutateGrant updates a grant with a compare-and-swap, on a context that
// survives the caller's.
func (s *Service) mutateGrant(ctx context.Context, id string, fn func(approvals.BreakGlass) (approvals.BreakGlass, error)) (approvals.BreakGlass, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return approvals.UpdateGrant(ctx, s.o.Grants, id, fn)
}

// lapse ends a request nobody approved in time.
func (s *Service) lapse(ctx context.Context, g approvals.BreakGlass) {
	g, err := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if !approvals.RequestLapsed(cur, s.o.Now()) {
			return cur, approvals.ErrUnchanged
		}
		return approvals.EndGrant(cur, approvals.OutcomeLapsed, "", "nobody approved it within "+Human(approvals.RequestTTL), s.o.Now())
	})
	if err != nil || g.Status != approvals.GrantEnded {
		return
	}
	_ = s.recordGrant(ctx, audit.StageLapsed, "", g, nil)
	s.refreshGrant(ctx, g)
	s.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass request `%s` for *%s* lapsed: nobody approved it within %s.",
		g.ID, g.Env, Human(approvals.RequestTTL)))
}

// announce posts a new grant in the security channel and keeps the
// message's place.
func (s *Service) announce(ctx context.Context, g approvals.BreakGlass) approvals.BreakGlass {
	posted, err := s.n.ShowGrant(ctx, g)
	if err != nil {
		s.log.Error("announce break-glass", "grant", g.ID, "channel", g.Channel, "err", err)
		return g
	}
	ts, link := posted.TS, posted.Permalink
	stored, err := s.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		cur.MessageTS, cur.Permalink = ts, link
		return cur, nil
	})
	if err != nil {
		s.log.Error("record break-glass announcement", "grant", g.ID, "err", err)
		g.MessageTS, g.Permalink = ts, link
		return g
	}
	return stored
}

// refreshGrant re-renders a grant's announcement.
func (s *Service) refreshGrant(ctx context.Context, g approvals.BreakGlass) {
	if g.MessageTS == "" {
		return
	}
	if _, err := s.n.ShowGrant(ctx, g); err != nil {
		s.log.Error("update grant message", "grant", g.ID, "err", err)
	}
}

// postGrant writes in the announcement's thread.
func (s *Service) postGrant(ctx context.Context, g approvals.BreakGlass, text string) {
	if g.MessageTS == "" {
		return
	}
	if err := s.n.Note(ctx, grantThread(g), text); err != nil {
		s.log.Error("post in thread", "grant", g.ID, "err", err)
	}
}

// grantError is what a person reads about a failed token creation.
func (s *Service) grantError(err error) string {
	switch {
	case errors.Is(err, runner.ErrAudit):
		return "the audit record could not be written"
	case errors.Is(err, runner.ErrCredentials):
		return "Vault is unavailable or refused"
	}
	return runner.Redact(err.Error())
}

func newGrantID() string { return "bg-" + newPlanID()[2:] }
