package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
)

// EmergencyCredentials mints break-glass tokens. The token itself is never
// seen by twokey: Vault returns it response-wrapped, and only the single-use
// wrapping token travels on, to the requester's direct messages.
type EmergencyCredentials interface {
	MintWrapped(ctx context.Context, req WrappedRequest) (Wrapped, error)
	// Alive reports whether the token with this accessor still exists.
	Alive(ctx context.Context, accessor string) (bool, error)
	// RevokeAccessor revokes a token, and with it every lease it created.
	RevokeAccessor(ctx context.Context, accessor string) error
}

// WrappedRequest asks for a token from a token role, returned wrapped.
type WrappedRequest struct {
	Role     string
	Policies []string
	TTL      time.Duration // the token's whole life; it is not renewable
	WrapTTL  time.Duration // how long the wrapping token can be unwrapped
	Purpose  string
}

// Wrapped is a response-wrapped token: WrapToken unwraps, once, to the
// token whose accessor is Accessor. WrapToken is delivered to one person and
// never logged or recorded.
type Wrapped struct {
	WrapToken    string    `json:"wrap_token"`
	WrapAccessor string    `json:"wrap_accessor"`
	Accessor     string    `json:"accessor"`
	CreationPath string    `json:"creation_path"`
	Expires      time.Time `json:"expires"`
	WrapExpires  time.Time `json:"wrap_expires"`
}

func (w Wrapped) String() string {
	return fmt.Sprintf("wrapped token %s (wrapping %s, redacted)", w.Accessor, w.WrapAccessor)
}

// GoString keeps %#v from printing the wrapping token.
func (w Wrapped) GoString() string { return w.String() }

// WrapInfo is what Vault says about a wrapping token without unwrapping it.
type WrapInfo struct {
	CreationPath string
	CreationTime time.Time
	TTL          time.Duration
}

// WrapChecker looks a wrapping token up — a Vault call that needs no login,
// so the process delivering the token can check it has not been unwrapped
// (or swapped) on the way.
type WrapChecker interface {
	LookupWrapping(ctx context.Context, wrapToken string) (WrapInfo, error)
}

// ErrWrapping: a wrapping token was already unwrapped, or is not what twokey
// created. Its token must be treated as compromised.
var ErrWrapping = errors.New("the wrapping token was unwrapped or replaced on the way")

// BreakGlassTarget is an environment's break-glass token role.
type BreakGlassTarget struct {
	Role     string
	Policies []string
	MaxTTL   time.Duration
	WrapTTL  time.Duration
}

// BreakGlassJob asks for the token of one approved grant.
type BreakGlassJob struct {
	GrantID string
	TTL     time.Duration
	Target  Target
}

// ErrNoBreakGlass: the environment has no break-glass configured here.
var ErrNoBreakGlass = errors.New("break-glass is not configured for this environment")

// BreakGlass mints the grant's token, response-wrapped, and records it —
// accessor, TTL and policies, never a token. A token whose minting cannot
// be recorded is revoked unused.
func (r *Runner) BreakGlass(ctx context.Context, job BreakGlassJob) (Wrapped, error) {
	bg := job.Target.BreakGlass
	if bg == nil {
		return Wrapped{}, fmt.Errorf("%w: %s/%s", ErrNoBreakGlass, job.Target.Project, job.Target.Env)
	}
	if job.TTL <= 0 || job.TTL > bg.MaxTTL {
		return Wrapped{}, fmt.Errorf("break-glass for %v: the cap is %v", job.TTL, bg.MaxTTL)
	}
	ec, err := r.emergency()
	if err != nil {
		return Wrapped{}, err
	}
	about := subject{project: job.Target.Project, env: job.Target.Env, planID: job.GrantID}
	terms := map[string]string{"role": bg.Role, "ttl": job.TTL.String(), "policies": strings.Join(bg.Policies, ","),
		"wrap_ttl": bg.WrapTTL.String(), "purpose": "breakglass " + job.GrantID}
	// Recorded before Vault is asked, as every credential is (see mint).
	if err := r.audit(ctx, audit.CredentialRequested, about, maps.Clone(terms)); err != nil {
		return Wrapped{}, err
	}
	w, err := ec.MintWrapped(ctx, WrappedRequest{Role: bg.Role, Policies: bg.Policies, TTL: job.TTL, WrapTTL: bg.WrapTTL,
		Purpose: "breakglass " + job.GrantID})
	if err != nil {
		return Wrapped{}, err
	}
	terms["accessor"] = w.Accessor
	if err := r.audit(ctx, audit.CredentialMinted, about, terms); err != nil {
		if rerr := r.revokeAccessors(w.Accessor, w.WrapAccessor); rerr != nil {
			r.o.Logger.Error("revoke an unrecorded break-glass token; it expires by its TTL", "accessor", w.Accessor, "err", rerr)
		}
		return Wrapped{}, err
	}
	return w, nil
}

// TokenAlive reports whether the token with accessor still exists. Project
// and env say whose token it is (runner pools route by them).
func (r *Runner) TokenAlive(ctx context.Context, _, _, accessor string) (bool, error) {
	ec, err := r.emergency()
	if err != nil {
		return false, err
	}
	return ec.Alive(ctx, accessor)
}

// RevokeBreakGlass revokes a grant's token and its wrapping token, and
// records it; a token already gone counts as revoked.
func (r *Runner) RevokeBreakGlass(ctx context.Context, project, env, grantID string, accessors ...string) error {
	err := r.revokeAccessors(accessors...)
	about := subject{project: project, env: env, planID: grantID}
	detail := map[string]string{"accessor": strings.Join(accessors, ","), "purpose": "breakglass " + grantID}
	if err != nil {
		detail["error"] = err.Error()
	}
	_ = r.audit(context.WithoutCancel(ctx), audit.CredentialRevoked, about, detail)
	return err
}

func (r *Runner) revokeAccessors(accessors ...string) error {
	ec, err := r.emergency()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, a := range accessors {
		if a == "" {
			continue
		}
		if err := ec.RevokeAccessor(ctx, a); err != nil {
			// Revoking a token that is already gone fails; what matters is that it is gone.
			if alive, lerr := ec.Alive(ctx, a); lerr != nil || alive {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) emergency() (EmergencyCredentials, error) {
	ec, ok := r.o.Creds.(EmergencyCredentials)
	if !ok {
		return nil, fmt.Errorf("%w: these credentials cannot mint break-glass tokens", ErrCredentials)
	}
	return ec, nil
}

// DriftJob checks one environment against the head of its default branch.
type DriftJob struct {
	ID     string // names the check's workspace
	Rev    Revision
	Target Target
}

// DriftResult is what a drift check found.
type DriftResult struct {
	SHA     string            `json:"sha"`
	Summary approvals.Summary `json:"summary"`
	Text    string            `json:"text,omitempty"` // the plan, redacted
}

// Drift plans rev with the environment's read-only plan credentials and
// reports what terraform would change: after a break-glass session, whether
// live infrastructure still matches the code. It takes neither the
// environment lock nor terraform's state lock (it writes nothing), and runs
// in a workspace of its own, so a pending plan is untouched.
func (r *Runner) Drift(ctx context.Context, job DriftJob) (DriftResult, error) {
	ctx, cancel := context.WithTimeout(ctx, job.Target.PlanTimeout)
	defer cancel()
	about := subject{project: job.Target.Project, env: job.Target.Env, sha: job.Rev.SHA, planID: job.ID}
	res, _, err := r.planIn(ctx, "drift", job.ID, job.Rev, job.Target, about, false, nil)
	if err != nil {
		return DriftResult{}, err
	}
	return DriftResult{SHA: job.Rev.SHA, Summary: res.Summary, Text: res.Text}, nil
}
