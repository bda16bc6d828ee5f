package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Break-glass: an on-call engineer asks for a time-boxed Vault token; at most
// one other person agrees; the token goes, response-wrapped, to the
// requester's DMs; the security channel sees every step; when the token is
// gone a drift check runs and two people review. None of it touches plans
// or environment locks.

// Errors of break-glass requests.
var (
	errNoBreakGlass = errors.New("break-glass is not configured for this environment")
	errNotOnCall    = errors.New("only the environment's on-call engineers may ask for break-glass access")
	errNoReason     = errors.New("break-glass needs a reason: everyone will read it")
	errNoRevoke     = errors.New("only the requester, the environment's on-call engineers and approvers, and twokey admins may revoke a grant")
	errNotRequester = errors.New("only the requester can report a problem with their token")
	errGrantMinting = errors.New("the token is being created right now; try again in a moment")
	errUnknownGrant = errors.New("this break-glass grant is unknown to twokey (it may be older than the retention period)")
	errSelfGrant    = errors.New("you asked for this break-glass access, so you cannot approve it")
	errNotGrantPeer = errors.New("only the environment's other on-call engineers and its approvers can approve break-glass access; your click was not counted")
	errNotReviewer  = errors.New("only the environment's approvers and twokey admins review break-glass grants")
)

// grantErrors are told to the user in their own words.
var grantErrors = []error{errNoBreakGlass, errNotOnCall, errNoReason, errNoRevoke, errNotRequester, errGrantMinting,
	errUnknownGrant, errSelfGrant, errNotGrantPeer, errNotReviewer, approvals.ErrSelfReview, approvals.ErrAlreadyReviewed,
	approvals.ErrRequestLapsed, runner.ErrNoBreakGlass}

// capError: the requested duration is over the environment's cap.
type capError struct {
	env        string
	asked, cap time.Duration
}

func (e *capError) Error() string {
	return fmt.Sprintf("%s is longer than break-glass in %s allows: at most %s", human(e.asked), e.env, human(e.cap))
}

// grantRequest is a break-glass request from the slash command or the form.
type grantRequest struct {
	project, env string
	duration     time.Duration
	reason       string
	incident     string
}

// checkGrantRequest resolves the environment and checks that user may ask
// for this: break-glass configured, on call, within the cap, with a reason.
func (b *Bot) checkGrantRequest(ctx context.Context, user string, r grantRequest) (*config.Project, *config.Environment, error) {
	proj, env, err := b.cfg.Resolve(r.project, r.env)
	if err != nil {
		return nil, nil, err
	}
	bg := env.BreakGlass
	if bg == nil {
		return nil, nil, fmt.Errorf("%w: %s/%s", errNoBreakGlass, proj.Name, env.Name)
	}
	onCall, derr := b.dir.includes(ctx, user, bg.OnCall)
	if !onCall && derr != nil {
		return nil, nil, fmt.Errorf("%w: %w", errMembership, derr)
	}
	if !onCall {
		return nil, nil, errNotOnCall
	}
	if r.duration > bg.MaxTTL.D() {
		return nil, nil, &capError{env: env.Name, asked: r.duration, cap: bg.MaxTTL.D()}
	}
	if strings.TrimSpace(r.reason) == "" {
		return nil, nil, errNoReason
	}
	return proj, env, nil
}

// breakGlass answers `/tf breakglass <env> <duration> <reason>`.
func (b *Bot) breakGlass(ctx context.Context, channel, user string, cmd commands.BreakGlass) error {
	return b.requestGrant(ctx, channel, user, grantRequest{project: cmd.Project, env: cmd.Env, duration: cmd.Duration,
		reason: cmd.Reason, incident: cmd.Incident})
}

// requestGrant creates a grant, announces it in the security channel and,
// where the environment needs no approval, creates the token at once.
func (b *Bot) requestGrant(ctx context.Context, channel, user string, r grantRequest) error {
	proj, env, err := b.checkGrantRequest(ctx, user, r)
	if err != nil {
		return err
	}
	bg := env.BreakGlass
	g, err := approvals.NewBreakGlass(approvals.GrantRequest{
		ID: newGrantID(), Project: proj.Name, Env: env.Name, Requester: user, Reason: strings.TrimSpace(r.reason),
		Incident: r.incident, Duration: r.duration, Required: bg.ApprovalsNeeded(), Policies: bg.Policies,
		Channel: bg.Channel, Minter: b.instance,
	}, b.o.Now())
	if err != nil {
		return err
	}
	if g, err = b.o.Notary.SealGrant(g); err != nil {
		return err
	}
	if g, err = b.o.Grants.CreateGrant(ctx, g); err != nil {
		return err
	}
	log := b.log.With("grant", g.ID, "env", g.Project+"/"+g.Env, "user", user)
	log.Warn("break-glass requested", "duration", g.Duration, "approvals", g.Required)
	if err := b.recordGrant(ctx, "requested", user, g, map[string]string{"reason": clip(g.Reason, 500),
		"incident": g.Incident, "duration": g.Duration.String(), "approvals": fmt.Sprint(g.Required),
		"policies": strings.Join(g.Policies, ",")}); err != nil {
		// Nothing may happen unrecorded: the request ends here.
		_, _ = b.mutateGrant(ctx, g.ID, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
			if g.Status == approvals.GrantMinting {
				return approvals.EndGrant(g, approvals.OutcomeFailed, "", "the audit record could not be written", b.o.Now())
			}
			return approvals.EndGrant(g, approvals.OutcomeLapsed, "", "the audit record could not be written", b.o.Now())
		})
		return fmt.Errorf("%w: %w", runner.ErrAudit, err)
	}
	g = b.announce(ctx, g)
	if g.Status == approvals.GrantMinting {
		b.tell(ctx, channel, user, fmt.Sprintf(":rotating_light: Break-glass `%s` for *%s*: self-service here, so your token "+
			"is on its way to your direct messages. Everyone in <#%s> can see it, and it will be reviewed afterwards.",
			g.ID, g.Env, g.Channel))
		b.mint(ctx, g)
		return nil
	}
	b.tell(ctx, channel, user, fmt.Sprintf(":rotating_light: Break-glass `%s` for *%s* is waiting for one approval in <#%s> "+
		"(another on-call engineer or an approver). Your token will come by direct message.", g.ID, g.Env, g.Channel))
	return nil
}

// approveGrant counts the one approval a request needs and creates the token.
func (b *Bot) approveGrant(ctx context.Context, channel, user, id string) (err error) {
	g, env, err := b.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	key := "click:" + id + ":" + actionBGApprove + ":" + user
	if !b.firstTime(ctx, key, channel, user) {
		return nil
	}
	defer b.forgetOnError(ctx, key, &err)
	authorized, err := b.mayApproveGrant(ctx, user, env)
	if err != nil && user != g.Requester {
		return err
	}
	g, err = b.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if err := b.o.Notary.CheckGrantSeal(cur); err != nil {
			return cur, err
		}
		return approvals.ApproveGrant(cur, user, authorized, b.instance, b.o.Now())
	})
	switch {
	case errors.Is(err, approvals.ErrForged):
		b.forgedGrant(ctx, g, err)
		return err
	case errors.Is(err, approvals.ErrRequestLapsed):
		b.lapse(ctx, g)
		return err
	case errors.Is(err, approvals.ErrSelfApproval):
		return errSelfGrant
	case errors.Is(err, approvals.ErrNotAuthorized):
		return errNotGrantPeer
	case err != nil:
		return err
	}
	b.log.Warn("break-glass approved", "grant", g.ID, "approver", user)
	_ = b.recordGrant(ctx, "approved", user, g, nil)
	b.refreshGrant(ctx, g)
	b.mint(ctx, g)
	return nil
}

// denyGrant refuses a request (or the requester withdraws it).
func (b *Bot) denyGrant(ctx context.Context, channel, user, id string) error {
	g, env, err := b.grantEnv(ctx, id)
	if err != nil {
		return err
	}
	authorized := false
	if user != g.Requester {
		if authorized, err = b.mayApproveGrant(ctx, user, env); err != nil {
			return err
		}
	}
	g, err = b.mutateGrant(ctx, id, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.DenyGrant(cur, user, authorized, b.o.Now())
	})
	if errors.Is(err, approvals.ErrNotAuthorized) {
		return errNotGrantPeer
	}
	if err != nil {
		return err
	}
	_ = b.recordGrant(ctx, "denied", user, g, map[string]string{"note": g.Note})
	b.refreshGrant(ctx, g)
	if user != g.Requester {
		b.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass request `%s` for *%s* was denied by <@%s>.", g.ID, g.Env, user))
	}
	return nil
}

// mayApproveGrant: another on-call engineer of the environment, or one of
// its approvers. An error means membership could not be read.
func (b *Bot) mayApproveGrant(ctx context.Context, user string, env *config.Environment) (bool, error) {
	return b.anyOf(ctx, user, env.BreakGlass.OnCall, env.Approvers)
}

// anyOf reports whether user is in any of the lists, reading them in
// order; an error (errMembership) means one could not be read before user
// was found.
func (b *Bot) anyOf(ctx context.Context, user string, lists ...config.Who) (bool, error) {
	for _, who := range lists {
		ok, err := b.dir.includes(ctx, user, who)
		if ok {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("%w: %w", errMembership, err)
		}
	}
	return false, nil
}

// mint creates the token of a grant this process holds in minting, and
// delivers it. Any failure ends the grant as failed, with no token left.
func (b *Bot) mint(ctx context.Context, g approvals.BreakGlass) {
	log := b.log.With("grant", g.ID, "env", g.Project+"/"+g.Env)
	if err := b.o.Notary.CheckGrantSeal(g); err != nil {
		b.forgedGrant(ctx, g, err)
		b.failGrant(ctx, g, "its record in Redis is not signed by twokey", nil)
		return
	}
	proj, env, err := b.cfg.Resolve(g.Project, g.Env)
	if err != nil || env.BreakGlass == nil {
		b.failGrant(ctx, g, "the environment's break-glass configuration is gone", nil)
		return
	}
	target, err := b.o.Target(proj.Name, env.Name)
	if err != nil {
		b.failGrant(ctx, g, "the environment's configuration is unreadable", nil)
		return
	}
	w, err := b.o.Runner.BreakGlass(ctx, runner.BreakGlassJob{GrantID: g.ID, TTL: g.Duration, Target: target})
	if err != nil {
		log.Error("break-glass token not created", "err", err)
		b.failGrant(ctx, g, "the token could not be created: "+b.grantError(err), nil)
		return
	}
	g, err = b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.Minted(cur, w.Accessor, w.WrapAccessor, w.Expires, w.WrapExpires, b.o.Now())
	})
	if err != nil {
		// The grant moved on without us (it stalled and was ended): the token must not live.
		log.Error("break-glass token created for a grant that moved on; revoking it", "err", err)
		_ = b.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, w.Accessor, w.WrapAccessor)
		return
	}
	log.Warn("break-glass token created", "accessor", w.Accessor, "expires", w.Expires)
	_ = b.recordGrant(ctx, "minted", "", g, map[string]string{"accessor": w.Accessor, "expires": w.Expires.UTC().Format(time.RFC3339),
		"wrap_expires": w.WrapExpires.UTC().Format(time.RFC3339)})
	b.deliver(ctx, g, w, env.BreakGlass.Role)
}

// deliverAttempts bounds how often a token's DM is tried.
const deliverAttempts = 4

// deliver sends the wrapping token to the requester's DMs. Before every
// attempt it asks Vault whether the wrapping token is still unused and is
// the one twokey created: if not, someone else got to it first, and the
// token is revoked as compromised.
func (b *Bot) deliver(ctx context.Context, g approvals.BreakGlass, w runner.Wrapped, role string) {
	log := b.log.With("grant", g.ID)
	if b.o.Wrapping == nil {
		b.failGrant(ctx, g, "twokey cannot check wrapping tokens, so it delivers none", &w)
		return
	}
	text, blocks := b.tokenMessage(g, w)
	var lastErr error
	for attempt := range deliverAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * time.Second)
		}
		info, err := b.o.Wrapping.LookupWrapping(ctx, w.WrapToken)
		switch {
		case errors.Is(err, runner.ErrWrapping):
			b.compromised(ctx, g, "", "its wrapping token was unwrapped before it reached the requester")
			return
		case err != nil:
			lastErr = err
			continue
		case info.CreationPath != "auth/token/create/"+role:
			b.compromised(ctx, g, "", fmt.Sprintf("its wrapping token came from %q, not from the break-glass role", info.CreationPath))
			return
		}
		ch, ts, err := b.dm(ctx, g.Requester, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
		if err != nil {
			lastErr = err
			log.Warn("deliver break-glass token", "attempt", attempt+1, "err", err)
			continue
		}
		g, err = b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
			cur.Delivered, cur.DMChannel, cur.DMTS, cur.UpdatedAt = true, ch, ts, b.o.Now()
			return cur, nil
		})
		if err != nil {
			log.Error("record break-glass delivery", "err", err)
		}
		_ = b.recordGrant(ctx, "delivered", "", g, map[string]string{"wrap_accessor": w.WrapAccessor})
		b.refreshGrant(ctx, g)
		return
	}
	log.Error("break-glass token not delivered; revoking it", "err", lastErr)
	b.failGrant(ctx, g, "the token could not be delivered", &w)
}

// failGrant ends a grant as failed, revoking its token if it has one.
func (b *Bot) failGrant(ctx context.Context, g approvals.BreakGlass, note string, w *runner.Wrapped) {
	if w != nil {
		if err := b.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, w.Accessor, w.WrapAccessor); err != nil {
			b.log.Error("revoke an undelivered break-glass token; it expires by its TTL", "grant", g.ID, "err", err)
		}
	}
	g, err := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeFailed, "", note, b.o.Now())
	})
	if err != nil {
		b.log.Error("end failed break-glass grant", "grant", g.ID, "err", err)
		return
	}
	_ = b.recordGrant(ctx, "failed", "", g, map[string]string{"note": note})
	b.refreshGrant(ctx, g)
	b.dmText(ctx, g.Requester, fmt.Sprintf(":x: Break-glass `%s` for *%s* failed: %s. No token is usable; ask again.", g.ID, g.Env, note))
}

// compromised revokes a grant whose wrapping token someone else unwrapped,
// and tells the requester and the security channel.
func (b *Bot) compromised(ctx context.Context, g approvals.BreakGlass, user, why string) {
	err := b.o.Runner.RevokeBreakGlass(context.WithoutCancel(ctx), g.Project, g.Env, g.ID, g.Accessor, g.WrapAccessor)
	g, merr := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeCompromised, user, why, b.o.Now())
	})
	if merr != nil {
		b.log.Error("end compromised break-glass grant", "grant", g.ID, "err", merr)
		return
	}
	b.log.Error("break-glass token compromised", "grant", g.ID, "why", why, "revoked", err == nil)
	_ = b.recordGrant(ctx, "compromised", user, g, map[string]string{"note": why, "revoked": fmt.Sprint(err == nil)})
	b.refreshGrant(ctx, g)
	revoked := "It was revoked."
	if err != nil {
		revoked = "Revoking it failed; it dies at " + g.ExpiresAt.UTC().Format("15:04 MST") + "."
	}
	b.postGrant(ctx, g, fmt.Sprintf(":rotating_light: *Compromised*: %s. %s <@%s>, ask again if you still need access.", why, revoked, g.Requester))
	b.dmText(ctx, g.Requester, fmt.Sprintf(":rotating_light: Your break-glass token `%s` was compromised: %s. %s "+
		"The security channel <#%s> has been told.", g.ID, why, revoked, g.Channel))
}

// unwrapFailed answers the requester's "Unwrap failed" click: if Vault says
// the wrapping token is gone before its time, someone else unwrapped it.
func (b *Bot) unwrapFailed(ctx context.Context, channel, user, id string) error {
	g, err := b.getGrant(ctx, id)
	if err != nil {
		return err
	}
	if user != g.Requester {
		return errNotRequester
	}
	if g.Status != approvals.GrantActive {
		b.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` is %s already.", g.ID, grantWords(g)))
		return nil
	}
	alive, err := b.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.WrapAccessor)
	if err != nil {
		return err
	}
	switch {
	case alive:
		b.tell(ctx, channel, user, "Vault says the wrapping token is still unused: copy the whole command again, "+
			"and check that `VAULT_ADDR` points at "+b.cfg.Vault.Address+".")
	case b.o.Now().Before(g.WrapExpires):
		b.compromised(ctx, g, user, fmt.Sprintf("<@%s> could not unwrap it, and Vault says its wrapping token was already used", user))
	default:
		b.failGrant(ctx, g, "the wrapping token expired before it was unwrapped", &runner.Wrapped{Accessor: g.Accessor, WrapAccessor: g.WrapAccessor})
	}
	return nil
}

// revokeGrant answers `/tf breakglass revoke <id>`.
func (b *Bot) revokeGrant(ctx context.Context, channel, user string, cmd commands.BreakGlassRevoke) error {
	g, env, err := b.grantEnv(ctx, cmd.ID)
	if err != nil {
		return err
	}
	if user != g.Requester {
		ok, err := b.anyOf(ctx, user, env.BreakGlass.OnCall, env.Approvers, b.cfg.Admins)
		if err != nil {
			return err
		}
		if !ok {
			return errNoRevoke
		}
	}
	switch g.Status {
	case approvals.GrantRequested:
		return b.denyGrant(ctx, channel, user, g.ID)
	case approvals.GrantMinting:
		return errGrantMinting
	case approvals.GrantEnded:
		b.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` has ended already (%s).", g.ID, grantWords(g)))
		return nil
	}
	if err := b.o.Runner.RevokeBreakGlass(ctx, g.Project, g.Env, g.ID, g.Accessor, g.WrapAccessor); err != nil {
		return err
	}
	g, err = b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		return approvals.EndGrant(cur, approvals.OutcomeRevoked, user, "", b.o.Now())
	})
	if err != nil {
		return err
	}
	gone := b.confirmGone(ctx, g)
	b.log.Warn("break-glass revoked", "grant", g.ID, "by", user, "confirmed", gone)
	_ = b.recordGrant(ctx, "revoked", user, g, map[string]string{"confirmed_gone": fmt.Sprint(gone)})
	b.refreshGrant(ctx, g)
	b.postGrant(ctx, g, fmt.Sprintf(":lock: Revoked by <@%s>. %s", user, goneWords(gone)))
	if user != g.Requester {
		b.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass token `%s` was revoked by <@%s>.", g.ID, user))
	}
	b.tell(ctx, channel, user, fmt.Sprintf("Grant `%s` revoked. %s", g.ID, goneWords(gone)))
	b.background(func(ctx context.Context) { b.driftCheck(ctx, g) })
	return nil
}

// confirmGone asks Vault whether the grant's token is gone, revoking it if
// it is not; it reports whether Vault confirmed.
func (b *Bot) confirmGone(ctx context.Context, g approvals.BreakGlass) bool {
	alive, err := b.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.Accessor)
	if err == nil && alive {
		_ = b.o.Runner.RevokeBreakGlass(ctx, g.Project, g.Env, g.ID, g.Accessor)
		alive, err = b.o.Runner.TokenAlive(ctx, g.Project, g.Env, g.Accessor)
	}
	if err != nil {
		b.log.Warn("could not confirm a break-glass token is gone", "grant", g.ID, "err", err)
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
func (b *Bot) grantEnv(ctx context.Context, id string) (approvals.BreakGlass, *config.Environment, error) {
	g, err := b.getGrant(ctx, id)
	if err != nil {
		return g, nil, err
	}
	_, env, err := b.cfg.Resolve(g.Project, g.Env)
	if err != nil {
		return g, nil, err
	}
	if env.BreakGlass == nil {
		return g, nil, fmt.Errorf("%w: %s/%s", errNoBreakGlass, g.Project, g.Env)
	}
	return g, env, nil
}

func (b *Bot) getGrant(ctx context.Context, id string) (approvals.BreakGlass, error) {
	g, err := b.o.Grants.GetGrant(ctx, id)
	if errors.Is(err, approvals.ErrNotFound) {
		return g, errUnknownGrant
	}
	return g, err
}

// mutateGrant updates a grant with a compare-and-swap, on a context that
// survives the caller's.
func (b *Bot) mutateGrant(ctx context.Context, id string, fn func(approvals.BreakGlass) (approvals.BreakGlass, error)) (approvals.BreakGlass, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return approvals.UpdateGrant(ctx, b.o.Grants, id, fn)
}

// lapse ends a request nobody approved in time.
func (b *Bot) lapse(ctx context.Context, g approvals.BreakGlass) {
	g, err := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		if !approvals.RequestLapsed(cur, b.o.Now()) {
			return cur, approvals.ErrUnchanged
		}
		return approvals.EndGrant(cur, approvals.OutcomeLapsed, "", "nobody approved it within "+human(approvals.RequestTTL), b.o.Now())
	})
	if err != nil || g.Status != approvals.GrantEnded {
		return
	}
	_ = b.recordGrant(ctx, "lapsed", "", g, nil)
	b.refreshGrant(ctx, g)
	b.dmText(ctx, g.Requester, fmt.Sprintf("Your break-glass request `%s` for *%s* lapsed: nobody approved it within %s.",
		g.ID, g.Env, human(approvals.RequestTTL)))
}

// announce posts a new grant in the security channel and keeps the
// message's place.
func (b *Bot) announce(ctx context.Context, g approvals.BreakGlass) approvals.BreakGlass {
	text, blocks := b.grantMessage(g)
	_, ts, err := b.api.PostMessageContext(ctx, g.Channel, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		b.log.Error("announce break-glass", "grant", g.ID, "channel", g.Channel, "err", err)
		return g
	}
	link, _ := b.api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: g.Channel, Ts: ts})
	stored, err := b.mutateGrant(ctx, g.ID, func(cur approvals.BreakGlass) (approvals.BreakGlass, error) {
		cur.MessageTS, cur.Permalink = ts, link
		return cur, nil
	})
	if err != nil {
		b.log.Error("record break-glass announcement", "grant", g.ID, "err", err)
		g.MessageTS, g.Permalink = ts, link
		return g
	}
	return stored
}

// refreshGrant re-renders a grant's announcement.
func (b *Bot) refreshGrant(ctx context.Context, g approvals.BreakGlass) {
	text, blocks := b.grantMessage(g)
	b.edit(ctx, g.Channel, g.MessageTS, text, blocks, "grant", g.ID)
}

// postGrant writes in the announcement's thread.
func (b *Bot) postGrant(ctx context.Context, g approvals.BreakGlass, text string) {
	b.reply(ctx, g.Channel, g.MessageTS, text, "grant", g.ID)
}

// dm posts to user's direct messages with twokey.
func (b *Bot) dm(ctx context.Context, user string, opts ...slack.MsgOption) (channel, ts string, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ch, _, _, err := b.api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{user}, ReturnIM: true})
	if err != nil {
		return "", "", fmt.Errorf("open a DM with %s: %w", user, err)
	}
	_, ts, err = b.api.PostMessageContext(ctx, ch.ID, opts...)
	if err != nil {
		return "", "", fmt.Errorf("post a DM to %s: %w", user, err)
	}
	return ch.ID, ts, nil
}

// dmText tells user something in their DMs; a failure is only logged.
func (b *Bot) dmText(ctx context.Context, user, text string) {
	if _, _, err := b.dm(ctx, user, slack.MsgOptionText(text, false)); err != nil {
		b.log.Error("direct message", "user", user, "err", err)
	}
}

// grantError is what a person reads about a failed token creation.
func (b *Bot) grantError(err error) string {
	switch {
	case errors.Is(err, runner.ErrAudit):
		return "the audit record could not be written"
	case errors.Is(err, runner.ErrCredentials):
		return "Vault is unavailable or refused"
	}
	return runner.Redact(err.Error())
}

func newGrantID() string { return "bg-" + newPlanID()[2:] }

// human renders a duration the way people write one: 30m, 1h, 1h30m, 45s.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := d/time.Hour, (d%time.Hour)/time.Minute, (d%time.Minute)/time.Second
	var out string
	if h > 0 {
		out += fmt.Sprintf("%dh", h)
	}
	if m > 0 {
		out += fmt.Sprintf("%dm", m)
	}
	if s > 0 || out == "" {
		out += fmt.Sprintf("%ds", s)
	}
	return out
}

// viewSubmitted checks a submitted break-glass modal before it is
// acknowledged: problems go back into the form, by block ID, and the
// modal stays open. Otherwise it returns the work to do once Slack has
// its acknowledgement.
func (b *Bot) viewSubmitted(ctx context.Context, cb slack.InteractionCallback) (map[string]string, func(context.Context)) {
	user := cb.User.ID
	if !slackID.MatchString(user) || !b.ours(cb.Team.ID, cb.Enterprise.ID) {
		return map[string]string{}, nil
	}
	values := cb.View.State.Values
	value := func(field string) string {
		a := values[field][field]
		if a.SelectedOption.Value != "" {
			return a.SelectedOption.Value
		}
		return strings.TrimSpace(a.Value)
	}
	switch cb.View.CallbackID {
	case viewBGRequest:
		channel := cb.View.PrivateMetadata
		project, env, _ := strings.Cut(value(fieldEnv), "/")
		r := grantRequest{project: project, env: env, reason: value(fieldReason), incident: value(fieldIncident)}
		d, err := time.ParseDuration(value(fieldDuration))
		if err != nil || d < time.Minute {
			return map[string]string{fieldDuration: "Write a duration of at least 1m, like 30m or 1h."}, nil
		}
		r.duration = d
		if r.incident != "" && !strings.HasPrefix(r.incident, "https://") {
			return map[string]string{fieldIncident: "An https:// link, or nothing."}, nil
		}
		if _, _, err := b.checkGrantRequest(ctx, user, r); err != nil {
			var ce *capError
			field := fieldEnv
			switch {
			case errors.As(err, &ce):
				field = fieldDuration
			case errors.Is(err, errNoReason):
				field = fieldReason
			}
			return map[string]string{field: clip(b.describe(err), 140)}, nil
		}
		return nil, func(ctx context.Context) {
			if err := b.requestGrant(ctx, channel, user, r); err != nil {
				b.failDM(ctx, channel, user, err)
			}
		}
	case viewBGReview:
		id, channel, _ := strings.Cut(cb.View.PrivateMetadata, " ")
		note := value(fieldNote)
		return nil, func(ctx context.Context) {
			if err := b.review(ctx, user, id, note); err != nil {
				b.failDM(ctx, channel, user, err)
			}
		}
	}
	return map[string]string{}, nil
}

// failDM tells user what went wrong, in channel if there is one, or else
// in their DMs.
func (b *Bot) failDM(ctx context.Context, channel, user string, err error) {
	if channel != "" {
		b.fail(ctx, channel, user, err, "user", user)
		return
	}
	b.dmText(ctx, user, b.describe(err, "user", user))
}
