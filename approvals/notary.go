package approvals

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twokey/twokey/attest"
)

// Errors of signed state.
var (
	// ErrForged: a plan, approval or permit is not signed by a trusted key,
	// or its signature does not cover what it claims. It is never acted on.
	ErrForged = errors.New("not signed by a trusted twokey key")
	// ErrPermitExpired: the permit is older than PermitTTL; plan again.
	ErrPermitExpired = errors.New("the permit to apply has run out")
)

// PermitTTL is how long a signed permit lets an apply start. A permit found in
// Redis later than this — replayed, say — starts nothing.
const PermitTTL = 10 * time.Minute

// Signature purposes: a signature made for one kind of statement never
// verifies as another.
const (
	purposePlan     = "plan"
	purposeApproval = "approval"
	purposePermit   = "permit"
	purposeOverride = "override"
)

// Notary signs what this process decided and verifies what others signed.
//
// The serve process that verifies Slack clicks holds a signing key: it seals
// each plan's terms (who asked, what exactly, how many approvals it needs),
// signs each approval it counted, and signs the permit to apply, which
// carries the signed approvals. Whoever mints apply credentials holds only
// the public keys: PermitOf verifies the permit and counts the quorum again
// from the approvals' own signatures. Approvals written into Redis by anyone
// else count for nothing.
type Notary struct {
	signer *attest.Signer // nil: this process only verifies (a runner)
	trust  attest.Keyring // keys of the processes that verify clicks
}

// NewNotary returns a Notary that signs with signer (nil for a process that
// only verifies) and trusts the keys in trust, and its own.
func NewNotary(signer *attest.Signer, trust attest.Keyring) *Notary {
	if signer != nil {
		trust = trust.With(signer.Public())
	}
	return &Notary{signer: signer, trust: trust}
}

// Trusted lists the IDs of the keys whose signatures count.
func (n *Notary) Trusted() []string { return n.trust.IDs() }

// PublicKeys are the keys whose signatures count, for a process that only
// verifies.
func (n *Notary) PublicKeys() []ed25519.PublicKey { return n.trust.Keys() }

// terms are what a plan's seal covers: everything the two-person rule
// decides on.
type terms struct {
	ID        string    `json:"id"`
	Project   string    `json:"project"`
	Env       string    `json:"env"`
	PR        int       `json:"pr"`
	Ref       string    `json:"ref"`
	SHA       string    `json:"sha"`
	Requester string    `json:"requester"`
	Authors   []Author  `json:"authors,omitempty"`
	Fence     int64     `json:"fence"`
	LockOwner string    `json:"lock_owner"`
	Digest    string    `json:"digest"`
	Required  int       `json:"required"`
	ExpiresAt time.Time `json:"expires_at"`
	// What approvers are shown and what policy decided: a Redis writer
	// can neither hide a destroy nor lift a denial or a required group.
	Title             string     `json:"title,omitempty"`
	URL               string     `json:"url,omitempty"`
	Summary           Summary    `json:"summary,omitzero"`
	Protected         bool       `json:"protected,omitempty"`
	Policy            Assessment `json:"policy,omitzero"`
	OverridesRequired int        `json:"overrides_required,omitempty"`
}

func termsOf(p Plan) terms {
	return terms{ID: p.ID, Project: p.Project, Env: p.Env, PR: p.PR, Ref: p.Ref.String(), SHA: p.SHA, Requester: p.Requester,
		Authors: p.Authors, Fence: p.Fence, LockOwner: p.LockOwner, Digest: p.Digest, Required: p.Required, ExpiresAt: p.ExpiresAt.UTC(),
		Title: p.Title, URL: p.URL, Summary: p.Summary, Protected: p.Protected, Policy: p.Policy, OverridesRequired: p.OverridesRequired}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs always marshal
	}
	return b
}

// approvalMessage is what an approval's signature covers.
func approvalMessage(planID string, a Approval) []byte {
	return mustJSON(struct {
		PlanID string    `json:"plan_id"`
		User   string    `json:"user"`
		At     time.Time `json:"at"`
		Digest string    `json:"digest"`
		SHA    string    `json:"sha"`
		Fence  int64     `json:"fence"`
		Groups []string  `json:"groups,omitempty"`
	}{planID, a.User, a.At.UTC(), a.Digest, a.SHA, a.Fence, a.Groups})
}

// SignedPermit is a permit as it travels through Redis: its body and the
// signature of the serve process that counted the approvals.
type SignedPermit struct {
	Body []byte           `json:"body"`
	Sig  attest.Signature `json:"sig"`
}

// permitBody is what a permit says.
type permitBody struct {
	Plan      terms      `json:"plan"`
	Approvals []Approval `json:"approvals"` // each signed on its own
	Overrides []Approval `json:"overrides,omitempty"`
	IssuedAt  time.Time  `json:"issued_at"`
	NotAfter  time.Time  `json:"not_after"`
}

func (n *Notary) sign(purpose string, msg []byte) (attest.Signature, error) {
	if n.signer == nil {
		return attest.Signature{}, errors.New("this process has no signing key")
	}
	return n.signer.Sign(purpose, msg), nil
}

// Seal signs a plan's terms. The serve process calls it when the plan is
// planned (Planned), and Approve and BeginApply refuse a plan whose terms
// no longer match their seal.
func (n *Notary) Seal(p Plan) (Plan, error) {
	sig, err := n.sign(purposePlan, mustJSON(termsOf(p)))
	if err != nil {
		return p, err
	}
	p.Seal = sig
	return p, nil
}

// CheckSeal verifies a plan's seal against its terms as they are now.
func (n *Notary) CheckSeal(p Plan) error {
	if err := n.trust.Verify(purposePlan, mustJSON(termsOf(p)), p.Seal); err != nil {
		return fmt.Errorf("%w: plan %s: its terms are %w", ErrForged, p.ID, err)
	}
	return nil
}

// split is p with only the approvals and overrides a trusted key signed
// for it, and how many others it carried.
func (n *Notary) split(p Plan) (Plan, int) {
	var forged int
	p.Approvals, forged = n.signed(purposeApproval, p.ID, p.Approvals)
	var more int
	p.Overrides, more = n.signed(purposeOverride, p.ID, p.Overrides)
	return p, forged + more
}

// signed keeps the entries of list a trusted key signed for purpose and
// planID, and counts the rest.
func (n *Notary) signed(purpose, planID string, list []Approval) (signed []Approval, forged int) {
	for _, a := range list {
		if n.trust.Verify(purpose, approvalMessage(planID, a), a.Sig) == nil {
			signed = append(signed, a)
		} else {
			forged++
		}
	}
	return signed, forged
}

// Approve is the package's Approve on a sealed plan, counting only signed
// approvals, and signing the one it adds. Approvals without a trusted
// signature are dropped from the plan and named in Result.Forged.
func (n *Notary) Approve(p Plan, user string, authorized bool, now time.Time, groups ...string) (Plan, Result, error) {
	return n.decide(p, purposeApproval, now, func(q Plan) (Plan, Result, error) {
		return Approve(q, user, authorized, now, groups...)
	})
}

// Override is the package's Override on a sealed plan, as Approve is.
func (n *Notary) Override(p Plan, user string, owner bool, now time.Time) (Plan, Result, error) {
	return n.decide(p, purposeOverride, now, func(q Plan) (Plan, Result, error) {
		return Override(q, user, owner, now)
	})
}

// decide runs one person's decision on the signed part of a sealed plan
// and signs the entry it adds, with purpose.
func (n *Notary) decide(p Plan, purpose string, now time.Time, do func(Plan) (Plan, Result, error)) (Plan, Result, error) {
	if err := n.CheckSeal(p); err != nil {
		return p, Result{}, err
	}
	q, forged := n.split(p)
	next, r, err := do(q)
	r.Forged = forged
	if err != nil {
		return p, r, err
	}
	if r.Counted {
		list := next.Approvals
		if purpose == purposeOverride {
			list = next.Overrides
		}
		last := &list[len(list)-1]
		if last.Sig, err = n.sign(purpose, approvalMessage(p.ID, *last)); err != nil {
			return p, r, err
		}
	}
	if r.Duplicate && forged > 0 {
		next.UpdatedAt = now // drop the forged ones, even though nothing new counted
	}
	return next, r, nil
}

// BeginApply moves a sealed, pending plan with enough signed approvals to
// StatusApplying, signs the permit (stored in the plan as Permit) and returns
// it. The caller must store the returned plan with a compare-and-swap
// before using the Permit: only the process whose write wins may apply.
func (n *Notary) BeginApply(p Plan, now time.Time) (Plan, Permit, error) {
	if err := n.CheckSeal(p); err != nil {
		return p, Permit{}, err
	}
	q, forged := n.split(p)
	next, g, err := beginApply(q, now)
	if errors.Is(err, ErrNoQuorum) && forged > 0 {
		return p, Permit{}, fmt.Errorf("%w (%d approval(s) without a trusted signature ignored: %w)", err, forged, ErrForged)
	}
	if err != nil {
		return p, Permit{}, err
	}
	body := permitBody{Plan: termsOf(q), Approvals: q.Approvals, Overrides: q.Overrides, IssuedAt: now.UTC(), NotAfter: now.Add(PermitTTL).UTC()}
	raw := mustJSON(body)
	sig, err := n.sign(purposePermit, raw)
	if err != nil {
		return p, Permit{}, err
	}
	next.Permit = &SignedPermit{Body: raw, Sig: sig}
	g.signed, g.notAfter = next.Permit, body.NotAfter
	return next, g, nil
}

// PermitOf returns the Permit of a plan that BeginApply moved to
// StatusApplying — for the process that mints apply credentials, which
// reads the plan from the store. It verifies the permit's signature and
// counts the quorum again from the approvals' own signatures, and builds
// the Permit only from what was signed, never from the plan's other fields.
func (n *Notary) PermitOf(p Plan) (Permit, error) {
	if p.Status != StatusApplying {
		return Permit{}, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if p.Permit == nil {
		return Permit{}, fmt.Errorf("%w: plan %s is applying without a signed permit", ErrForged, p.ID)
	}
	if err := n.trust.Verify(purposePermit, p.Permit.Body, p.Permit.Sig); err != nil {
		return Permit{}, fmt.Errorf("%w: plan %s: the permit is %w", ErrForged, p.ID, err)
	}
	var body permitBody
	if err := json.Unmarshal(p.Permit.Body, &body); err != nil {
		return Permit{}, fmt.Errorf("%w: plan %s: unreadable permit: %w", ErrForged, p.ID, err)
	}
	t := body.Plan
	if t.ID != p.ID {
		return Permit{}, fmt.Errorf("%w: plan %s carries the permit of plan %s", ErrForged, p.ID, t.ID)
	}
	as, _ := n.signed(purposeApproval, t.ID, body.Approvals)
	os, _ := n.signed(purposeOverride, t.ID, body.Overrides)
	c := count(t, as, os)
	if !c.quorum(t) {
		return Permit{}, fmt.Errorf("%w: plan %s: %d signed approval(s) of %d required, groups %v missing, denial overridden: %t: %w",
			ErrForged, p.ID, len(c.approvers), t.Required, c.missingGroups, c.overridden(t), ErrNoQuorum)
	}
	return Permit{planID: t.ID, project: t.Project, env: t.Env, pr: t.PR, sha: t.SHA, digest: t.Digest,
		fence: t.Fence, lockOwner: t.LockOwner, approvers: c.approvers, notAfter: body.NotAfter, signed: p.Permit}, nil
}

// Signed is p with only the approvals a trusted key signed for it: what a
// person is shown, so that an approval written into Redis is never
// displayed as counted.
func (n *Notary) Signed(p Plan) Plan {
	p, _ = n.split(p)
	return p
}

// purposeBreakGlass is what a break-glass request's seal is for.
const purposeBreakGlass = "breakglass"

// grantTerms are what a break-glass request's seal covers: who asks, for
// where, for how long, with which policies, needing how many approvals.
func grantTerms(g BreakGlass) []byte {
	return mustJSON(struct {
		ID        string        `json:"id"`
		Project   string        `json:"project"`
		Env       string        `json:"env"`
		Requester string        `json:"requester"`
		Duration  time.Duration `json:"duration"`
		Required  int           `json:"required"`
		Policies  []string      `json:"policies"`
		Channel   string        `json:"channel"`
		CreatedAt time.Time     `json:"created_at"`
	}{g.ID, g.Project, g.Env, g.Requester, g.Duration, g.Required, g.Policies, g.Channel, g.CreatedAt.UTC()})
}

// SealGrant signs a break-glass request's terms when serve creates it.
func (n *Notary) SealGrant(g BreakGlass) (BreakGlass, error) {
	sig, err := n.sign(purposeBreakGlass, grantTerms(g))
	if err != nil {
		return g, err
	}
	g.Seal = sig
	return g, nil
}

// CheckGrantSeal verifies a break-glass request's terms against its seal;
// serve checks it before counting an approval and before minting.
func (n *Notary) CheckGrantSeal(g BreakGlass) error {
	if err := n.trust.Verify(purposeBreakGlass, grantTerms(g), g.Seal); err != nil {
		return fmt.Errorf("%w: break-glass %s: its terms are %w", ErrForged, g.ID, err)
	}
	return nil
}

// PermitTag names the permit a plan carries — each BeginApply signs a new
// one — so that an apply's claim and result belong to one attempt: a retry
// after an apply could not start is a new attempt, and a replayed one is
// the same. "" when the plan carries none.
func (p Plan) PermitTag() string { return permitTag(p.Permit) }

// Tag is PermitTag of the plan this permit was signed for.
func (g Permit) Tag() string { return permitTag(g.signed) }

func permitTag(s *SignedPermit) string {
	if s == nil {
		return ""
	}
	sum := sha256.Sum256(s.Body)
	return hex.EncodeToString(sum[:16])
}
