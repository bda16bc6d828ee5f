// Package approvals is the two-person rule: the life of one plan from
// planning to applied, and the rules that decide whether a click counts.
//
// Every function here is pure: it takes a Plan and the time and returns the
// next Plan and a decision. Storage is behind Store, a versioned
// compare-and-swap, so a duplicate delivery or a second bot process can never
// count a click twice or start a second apply. The only ways to get a Permit —
// the value runner.Apply requires — are a Notary's BeginApply, on a plan with
// enough signed approvals, and its PermitOf, which verifies a signed permit.
package approvals

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/ref"
)

// Status is where a plan is in its life.
type Status string

const (
	StatusPlanning    Status = "planning"    // lock held, terraform plan running
	StatusPending     Status = "pending"     // planned, waiting for approvals
	StatusApplying    Status = "applying"    // quorum reached, apply running
	StatusApplied     Status = "applied"     // apply succeeded
	StatusFailed      Status = "failed"      // apply failed
	StatusPlanFailed  Status = "plan_failed" // terraform plan failed
	StatusNoChanges   Status = "no_changes"  // nothing to apply
	StatusRejected    Status = "rejected"    // someone clicked Reject
	StatusInvalidated Status = "invalidated" // expired, replaced, or otherwise void
	StatusInterrupted Status = "interrupted" // apply cut short; never retried
)

// Terminal reports whether nothing can happen to a plan any more.
func (s Status) Terminal() bool {
	switch s {
	case StatusPlanning, StatusPending, StatusApplying:
		return false
	}
	return true
}

// Plan is one proposed change and everything decided about it.
type Plan struct {
	ID        string  `json:"id"`
	Project   string  `json:"project"`
	Env       string  `json:"env"`
	PR        int     `json:"pr,omitempty"`    // the pull request, if the ref is one
	Ref       ref.Ref `json:"ref"`             // what was asked for; stored as typed: pr-42, sha-…, ref-v1.2
	SHA       string  `json:"sha"`             // the commit that was planned
	Title     string  `json:"title,omitempty"` // PR title, for people reading the message
	URL       string  `json:"url,omitempty"`   // PR web page
	Requester string  `json:"requester"`       // Slack user ID
	// Authors are the GitHub identities that wrote or committed the
	// change (authors.go); the seal covers them.
	Authors   []Author `json:"authors,omitempty"`
	Channel   string   `json:"channel"`
	MessageTS string   `json:"message_ts,omitempty"`
	Permalink string   `json:"permalink,omitempty"` // the plan message's link

	// The environment lock this plan holds: its fencing number and the
	// owner token that lets any bot process refresh or release it.
	Fence     int64  `json:"fence"`
	LockOwner string `json:"lock_owner"`

	Digest  string  `json:"digest,omitempty"` // sha256 of the saved plan file
	Summary Summary `json:"summary"`

	Required  int        `json:"required"`
	Approvals []Approval `json:"approvals,omitempty"`
	// Protected: the environment is protected; approving asks to confirm.
	Protected bool `json:"protected,omitempty"`
	// Policy is what the environment's policies found in the plan; a
	// denial needs OverridesRequired policy owners' overrides before anyone may
	// approve, and its required groups each need an approval.
	Policy Assessment `json:"policy,omitzero"`
	// Unmet are the environment's GitHub requirements the plan did not meet
	// when last checked, for people to read; they are checked again at
	// each Approve and before the apply, so this is never what decides.
	Unmet []string `json:"unmet,omitempty"`
	// Preview is what terraform said a plan still planning does, shown
	// while the saved plan is read back. Nothing is approved by it: a click
	// on it waits for the saved plan, and counts only if the saved plan
	// says the same and its checks found nothing more to look at.
	Preview           *Summary   `json:"preview,omitempty"`
	OverridesRequired int        `json:"overrides_required,omitempty"`
	Overrides         []Approval `json:"overrides,omitempty"`
	// Attempts counts applies that could not start (credentials or GitHub
	// unavailable) and returned the plan to pending.
	Attempts int `json:"attempts,omitempty"`
	// Executor is who runs the apply (a runner worker), set once by Claim.
	Executor string `json:"executor,omitempty"`

	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"` // why it ended, in words a person reads
	Actor  string `json:"actor,omitempty"`  // who ended it (rejecter), if a person

	CreatedAt time.Time `json:"created_at"`
	PlannedAt time.Time `json:"planned_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at"`
	UpdatedAt time.Time `json:"updated_at"`

	// Seal is the signature, by the serve process that made the plan, of
	// the terms approvals are given for (see Notary).
	Seal attest.Signature `json:"seal,omitzero"`
	// Permit is the signed permission to apply, set by Notary.BeginApply;
	// whoever mints apply credentials verifies it (Notary.PermitOf).
	Permit *SignedPermit `json:"permit,omitempty"`

	// Version is the store's compare-and-swap counter; Store.Put rejects a
	// plan whose Version is not the stored one.
	Version int64 `json:"version"`
}

// Approval is one person's approval, bound to the exact plan it was given for.
type Approval struct {
	User   string    `json:"user"`
	At     time.Time `json:"at"`
	Digest string    `json:"digest"`
	SHA    string    `json:"sha"`
	Fence  int64     `json:"fence"`
	// Groups are the plan's required groups (Assessment.Groups) this
	// person belonged to when they clicked.
	Groups []string `json:"groups,omitempty"`
	// Sig is the signature of the serve process that verified the click.
	Sig attest.Signature `json:"sig,omitzero"`
}

// Summary is what the plan would do, without any values.
//
// Add and Destroy count replacements too (as terraform's own "to add" and
// "to destroy" do); Replace says how many of them are replacements.
type Summary struct {
	Add       int        `json:"add"`
	Change    int        `json:"change"`
	Destroy   int        `json:"destroy"`
	Replace   int        `json:"replace,omitempty"`
	Import    int        `json:"import,omitempty"`  // resources brought under management
	Move      int        `json:"move,omitempty"`    // resources whose address changes (moved blocks)
	Forget    int        `json:"forget,omitempty"`  // resources dropped from state, not destroyed (removed blocks)
	Outputs   int        `json:"outputs,omitempty"` // root module outputs that change
	Resources []Resource `json:"resources,omitempty"`
	// Changes is terraform's own answer (terraform-exec's Plan result):
	// applying would change something, even if nothing above counts it.
	Changes bool `json:"changes,omitempty"`
}

// Tag names what a summary says: two summaries with the same tag say the
// same changes. A preview's Approve button carries its tag, so that the
// click is decided on what was shown, whatever the store says since.
func (s Summary) Tag() string {
	sum := sha256.Sum256(mustJSON(s))
	return hex.EncodeToString(sum[:])
}

// Destroyed lists the addresses the summary destroys or replaces.
func (s Summary) Destroyed() []string {
	var out []string
	for _, r := range s.Resources {
		if r.Action == ActionDelete || r.Action == ActionReplace {
			out = append(out, r.Address)
		}
	}
	return out
}

// Resource is one resource the plan touches.
type Resource struct {
	Address string `json:"address"`
	Action  Action `json:"action"`
	// From is the address the resource had before a move.
	From string `json:"from,omitempty"`
	// Imported: the plan imports the resource (and then Action applies to it).
	Imported bool `json:"imported,omitempty"`
}

// Action is what happens to a resource.
type Action string

const (
	ActionCreate  Action = "create"
	ActionUpdate  Action = "update"
	ActionDelete  Action = "delete"
	ActionReplace Action = "replace" // delete and create
	ActionForget  Action = "forget"  // dropped from state; the object lives on
	ActionImport  Action = "import"  // imported, nothing else changes
	ActionMove    Action = "move"    // moved, nothing else changes
)

// Sign is the action's short mark: + ~ - ± ⇥ import →.
func (a Action) Sign() string {
	switch a {
	case ActionCreate:
		return "+"
	case ActionUpdate:
		return "~"
	case ActionDelete:
		return "-"
	case ActionReplace:
		return "±"
	case ActionForget:
		return "⇥"
	case ActionMove:
		return "→"
	case ActionImport:
		return "import"
	}
	return "?"
}

// HasChanges reports whether applying would change anything: resources,
// imports, moves, forgets or outputs.
func (s Summary) HasChanges() bool {
	return s.Changes || s.Add+s.Change+s.Destroy+s.Import+s.Move+s.Forget+s.Outputs > 0
}

// Counts is the summary in one line: "+1 ~0 -2 ±1 →1 ⇥1 import 2 outputs 1";
// the first three always, the others when there are any.
func (s Summary) Counts() string {
	out := fmt.Sprintf("+%d ~%d -%d", s.Add, s.Change, s.Destroy)
	for _, c := range []struct {
		sign string
		n    int
	}{{"±", s.Replace}, {"→", s.Move}, {"⇥", s.Forget}, {"import ", s.Import}, {"outputs ", s.Outputs}} {
		if c.n > 0 {
			out += fmt.Sprintf(" %s%d", c.sign, c.n)
		}
	}
	return out
}

// Errors. Callers use errors.Is; all of them are expected outcomes that a
// person is told about, not faults.
var (
	ErrSelfApproval   = errors.New("the requester cannot approve their own plan")
	ErrNotAuthorized  = errors.New("not authorized for this environment")
	ErrNotPending     = errors.New("plan is not waiting for approval")
	ErrExpired        = errors.New("plan has expired")
	ErrNoQuorum       = errors.New("plan does not have enough approvals")
	ErrPermitMismatch = errors.New("permit does not belong to this plan")
	// ErrPolicyDenied: policy denied the plan and no policy owner has
	// overridden the denial yet.
	ErrPolicyDenied = errors.New("policy denied this plan")
	// ErrNotDenied: an override of a plan that policy did not deny.
	ErrNotDenied = errors.New("policy did not deny this plan; there is nothing to override")
	// ErrNotPolicyOwner: an override by someone who is not a policy owner.
	ErrNotPolicyOwner = errors.New("not a policy owner for this environment")
)

// StateError says which state a plan was in when an action needed another.
type StateError struct {
	Status Status
	Want   error // ErrNotPending, ErrExpired, …
}

func (e *StateError) Error() string { return fmt.Sprintf("%v (plan is %s)", e.Want, e.Status) }
func (e *StateError) Unwrap() error { return e.Want }

// Request describes a plan that is about to run.
type Request struct {
	ID, Project, Env  string
	PR                int
	Ref               ref.Ref
	SHA, Title, URL   string
	Requester         string
	Authors           []Author
	Channel           string
	Fence             int64
	LockOwner         string
	Required          int  // approvals needed
	Protected         bool // protected environments never need fewer than two
	OverridesRequired int  // policy owners whose overrides lift a denial; 0: none can
	TTL               time.Duration
}

// MinProtectedApprovals is the floor for protected environments.
const MinProtectedApprovals = 2

// New starts a plan in StatusPlanning.
func New(r Request, now time.Time) (Plan, error) {
	if r.ID == "" || r.Env == "" || r.Requester == "" || r.SHA == "" || r.LockOwner == "" || r.Fence <= 0 {
		return Plan{}, fmt.Errorf("incomplete plan request %+v", r)
	}
	if r.TTL <= 0 {
		return Plan{}, errors.New("plan TTL must be positive")
	}
	required := max(r.Required, 1)
	if r.Protected {
		required = max(required, MinProtectedApprovals)
	}
	return Plan{
		ID: r.ID, Project: r.Project, Env: r.Env, PR: r.PR, Ref: r.Ref, SHA: r.SHA, Title: r.Title, URL: r.URL,
		Requester: r.Requester, Authors: slices.Clone(r.Authors), Channel: r.Channel, Fence: r.Fence, LockOwner: r.LockOwner,
		Required: required, Protected: r.Protected, OverridesRequired: max(r.OverridesRequired, 0), Status: StatusPlanning,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(r.TTL),
	}, nil
}

// Planned records the result of a successful terraform plan and what
// policy found in it, which can raise the number of approvals needed. A
// plan with changes waits for approvals; one without ends as
// StatusNoChanges.
func Planned(p Plan, digest string, s Summary, a Assessment, ttl time.Duration, now time.Time) (Plan, error) {
	if p.Status != StatusPlanning {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if digest == "" {
		return p, errors.New("planned without a plan digest")
	}
	p.Digest, p.Summary, p.Policy, p.PlannedAt, p.UpdatedAt = digest, s, a, now, now
	p.Preview = nil // the saved plan's Summary says it now
	p.Required = a.Quorum(p.Required)
	p.ExpiresAt = now.Add(ttl)
	p.Status = StatusPending
	if !s.HasChanges() {
		p.Status, p.Reason = StatusNoChanges, "no changes"
	}
	return p, nil
}

// Expired reports whether a plan that is still open has passed its TTL.
// An applying plan never expires: its lease governs it.
func Expired(p Plan, now time.Time) bool {
	return (p.Status == StatusPlanning || p.Status == StatusPending) && !now.Before(p.ExpiresAt)
}

// Result says what an approval click did.
type Result struct {
	Counted   bool // a new approval was recorded
	Duplicate bool // this user had already approved this exact plan
	Quorum    bool // the plan now has enough approvals
	// Forged counts approvals that no trusted key signed; a Notary
	// dropped them and they did not count.
	Forged int
}

// Approve records user's approval. authorized is the caller's decision, made
// at click time, that user may approve in this plan's environment; groups
// are the groups user belongs to, of those the plan's policy requires.
func Approve(p Plan, user string, authorized bool, now time.Time, groups ...string) (Plan, Result, error) {
	if err := open(p, now); err != nil {
		return p, Result{}, err
	}
	if user == p.Requester {
		return p, Result{}, ErrSelfApproval
	}
	if !authorized {
		return p, Result{}, ErrNotAuthorized
	}
	if !Overridden(p) {
		return p, Result{}, ErrPolicyDenied
	}
	if slices.ContainsFunc(p.Approvals, func(a Approval) bool { return a.User == user && bound(p, a) }) {
		return p, Result{Duplicate: true, Quorum: HasQuorum(p)}, nil
	}
	var in []string
	for _, g := range p.Policy.GroupNames() {
		if slices.Contains(groups, g) {
			in = append(in, g)
		}
	}
	p.Approvals = append(slices.Clone(p.Approvals), Approval{
		User: user, At: now, Digest: p.Digest, SHA: p.SHA, Fence: p.Fence, Groups: in,
	})
	p.UpdatedAt = now
	return p, Result{Counted: true, Quorum: HasQuorum(p)}, nil
}

// Override records a policy owner's override of a denial. owner is the
// caller's decision, made at click time, that user is a policy owner here.
// It is not an approval: the plan still needs its approvals after it.
func Override(p Plan, user string, owner bool, now time.Time) (Plan, Result, error) {
	if err := open(p, now); err != nil {
		return p, Result{}, err
	}
	if len(p.Policy.Denied) == 0 {
		return p, Result{}, ErrNotDenied
	}
	if user == p.Requester {
		return p, Result{}, ErrSelfApproval
	}
	if !owner || p.OverridesRequired < 1 {
		return p, Result{}, ErrNotPolicyOwner
	}
	if slices.ContainsFunc(p.Overrides, func(a Approval) bool { return a.User == user && bound(p, a) }) {
		return p, Result{Duplicate: true, Quorum: HasQuorum(p)}, nil
	}
	p.Overrides = append(slices.Clone(p.Overrides), Approval{User: user, At: now, Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
	p.UpdatedAt = now
	return p, Result{Counted: true, Quorum: HasQuorum(p)}, nil
}

// Approvers returns the distinct users whose approvals count for the plan
// as it is now, in the order they approved.
func Approvers(p Plan) []string { return tallyOf(p).approvers }

// Overriders returns the distinct policy owners whose overrides count.
func Overriders(p Plan) []string { return tallyOf(p).overriders }

// HasQuorum reports whether the plan may be applied: enough distinct people
// approved this exact plan, each group its policy requires gave one of
// those approvals, and a denial, if any, was overridden.
func HasQuorum(p Plan) bool { return tallyOf(p).quorum(termsOf(p)) }

// Missing is how many more approvals the plan needs.
func Missing(p Plan) int { return max(p.Required-len(Approvers(p)), 0) }

// MissingGroups are the required groups no counted approval came from yet.
func MissingGroups(p Plan) []string { return tallyOf(p).missingGroups }

// Overridden reports whether the plan may take approvals as far as policy
// goes: nothing was denied, or enough policy owners overrode the denial.
func Overridden(p Plan) bool { return tallyOf(p).overridden(termsOf(p)) }

func tallyOf(p Plan) tally { return count(termsOf(p), p.Approvals, p.Overrides) }

// tally is what a plan's approvals and overrides amount to, counted against
// its terms. HasQuorum and PermitOf — the serve process that counts clicks
// and the process that mints apply credentials — both decide with it.
type tally struct {
	approvers, overriders []string
	missingGroups         []string
}

// count counts the approvals and overrides bound to exactly t (its digest,
// commit and fence), once per person, never the requester's.
func count(t terms, as, os []Approval) tally {
	var c tally
	bound := func(a Approval) bool {
		return a.Digest == t.Digest && a.SHA == t.SHA && a.Fence == t.Fence && a.User != t.Requester
	}
	var groups []string
	for _, a := range as {
		if bound(a) && !slices.Contains(c.approvers, a.User) {
			c.approvers = append(c.approvers, a.User)
			groups = append(groups, a.Groups...)
		}
	}
	for _, o := range os {
		if bound(o) && !slices.Contains(c.overriders, o.User) {
			c.overriders = append(c.overriders, o.User)
		}
	}
	for _, g := range t.Policy.GroupNames() {
		if !slices.Contains(groups, g) {
			c.missingGroups = append(c.missingGroups, g)
		}
	}
	return c
}

func (c tally) overridden(t terms) bool {
	return len(t.Policy.Denied) == 0 || (t.OverridesRequired > 0 && len(c.overriders) >= t.OverridesRequired)
}

func (c tally) quorum(t terms) bool {
	return t.Required > 0 && len(c.approvers) >= t.Required && len(c.missingGroups) == 0 && c.overridden(t)
}

func bound(p Plan, a Approval) bool {
	return a.Digest == p.Digest && a.SHA == p.SHA && a.Fence == p.Fence
}

// Reject ends a pending plan. The requester may always withdraw their own
// plan; anyone else must be authorized to approve.
func Reject(p Plan, user string, authorized bool, reason string, now time.Time) (Plan, error) {
	if p.Status != StatusPending && p.Status != StatusPlanning {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if user != p.Requester && !authorized {
		return p, ErrNotAuthorized
	}
	p.Status, p.Actor, p.Reason, p.UpdatedAt = StatusRejected, user, reason, now
	return p, nil
}

// End moves an open plan to a terminal status other than applied/failed:
// plan failures, invalidation (expiry, replacement, a moved PR, an unlock)
// and interruption. It refuses to end a plan that is already over.
func End(p Plan, to Status, reason string, now time.Time) (Plan, error) {
	if p.Status.Terminal() {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	switch to {
	case StatusPlanFailed, StatusInvalidated, StatusInterrupted:
	default:
		return p, fmt.Errorf("End cannot move a plan to %s", to)
	}
	if to == StatusPlanFailed && p.Status != StatusPlanning {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	p.Status, p.Reason, p.UpdatedAt = to, reason, now
	return p, nil
}

// Permit is permission to apply one exact plan once. Its fields cannot be
// set from outside this package, and only a Notary makes one: BeginApply,
// which counted signed approvals and signs the permit, and PermitOf, which
// verifies a signed permit and its approvals again.
type Permit struct {
	planID, project, env string
	pr                   int
	sha, digest          string
	fence                int64
	lockOwner            string
	approvers            []string
	notAfter             time.Time
	signed               *SignedPermit
}

func (g Permit) PlanID() string      { return g.planID }
func (g Permit) Project() string     { return g.project }
func (g Permit) Env() string         { return g.env }
func (g Permit) PR() int             { return g.pr }
func (g Permit) SHA() string         { return g.sha }
func (g Permit) Digest() string      { return g.digest }
func (g Permit) Fence() int64        { return g.fence }
func (g Permit) LockOwner() string   { return g.lockOwner }
func (g Permit) Approvers() []string { return slices.Clone(g.approvers) }

// NotAfter is when the permit stops letting an apply start.
func (g Permit) NotAfter() time.Time { return g.notAfter }

// Valid reports whether g came from a Notary (the zero Permit does not).
func (g Permit) Valid() bool {
	return g.planID != "" && g.digest != "" && len(g.approvers) > 0 && g.signed != nil
}

// Check is what runs right before apply credentials are minted: the permit
// came from a Notary and has not run out.
func (g Permit) Check(now time.Time) error {
	if !g.Valid() {
		return fmt.Errorf("%w: apply without a signed permit", ErrForged)
	}
	if !now.Before(g.notAfter) {
		return fmt.Errorf("%w: the permit ran out at %s", ErrPermitExpired, g.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// beginApply moves a pending plan with quorum to StatusApplying and returns
// the Permit for it; Notary.BeginApply signs it.
func beginApply(p Plan, now time.Time) (Plan, Permit, error) {
	if err := open(p, now); err != nil {
		return p, Permit{}, err
	}
	if p.Status != StatusPending {
		return p, Permit{}, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if !HasQuorum(p) {
		return p, Permit{}, ErrNoQuorum
	}
	p.Status, p.UpdatedAt = StatusApplying, now
	return p, Permit{
		planID: p.ID, project: p.Project, env: p.Env, pr: p.PR, sha: p.SHA, digest: p.Digest,
		fence: p.Fence, lockOwner: p.LockOwner, approvers: Approvers(p),
	}, nil
}

// ErrClaimed: someone already started this apply; it is never run twice.
var ErrClaimed = errors.New("apply already started")

// Claim records who runs an applying plan. Only the first claim succeeds:
// a runner that finds the plan claimed — by itself before a crash, or by
// another — must not apply it.
func Claim(p Plan, executor string, now time.Time) (Plan, error) {
	if p.Status != StatusApplying {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if p.Executor != "" {
		return p, fmt.Errorf("%w by %s", ErrClaimed, p.Executor)
	}
	p.Executor, p.UpdatedAt = executor, now
	return p, nil
}

// Finish records the end of an apply started with g.
func Finish(p Plan, g Permit, applyErr error, reason string, now time.Time) (Plan, error) {
	if p.Status != StatusApplying {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if g.planID != p.ID || g.digest != p.Digest || g.fence != p.Fence {
		return p, ErrPermitMismatch
	}
	p.Status, p.Reason, p.UpdatedAt = StatusApplied, reason, now
	if applyErr != nil {
		p.Status = StatusFailed
	}
	return p, nil
}

// Abort returns a plan from StatusApplying to StatusPending when the apply
// could not start — credentials unavailable, say — and nothing was changed.
// Its approvals stay; the next Approve click retries.
func Abort(p Plan, g Permit, reason string, now time.Time) (Plan, error) {
	if p.Status != StatusApplying {
		return p, &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if g.planID != p.ID || g.digest != p.Digest || g.fence != p.Fence {
		return p, ErrPermitMismatch
	}
	p.Status, p.Reason, p.UpdatedAt = StatusPending, reason, now
	p.Attempts++
	p.Executor = ""
	p.Permit = nil // the next BeginApply signs a new one
	return p, nil
}

// open checks that p can still take approvals.
func open(p Plan, now time.Time) error {
	if p.Status != StatusPending {
		return &StateError{Status: p.Status, Want: ErrNotPending}
	}
	if Expired(p, now) {
		return &StateError{Status: p.Status, Want: ErrExpired}
	}
	return nil
}
