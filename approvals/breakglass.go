package approvals

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twokey/twokey/attest"
)

// Break-glass is the way around the two-person rule when production is on
// fire: an on-call engineer asks for a time-boxed Vault token, at most one
// other person agrees (or nobody, where the environment allows
// self-service), and afterwards two people review what happened. A grant
// never touches plans or the environment lock.

// GrantStatus is where a break-glass grant is in its life.
type GrantStatus string

const (
	GrantRequested GrantStatus = "requested" // waiting for the one approval
	GrantMinting   GrantStatus = "minting"   // approved; one process is creating the token
	GrantActive    GrantStatus = "active"    // the token exists until ExpiresAt
	GrantEnded     GrantStatus = "ended"     // see Outcome
)

// Outcome is how a grant ended.
type Outcome string

const (
	OutcomeDenied      Outcome = "denied"      // refused, or withdrawn by the requester
	OutcomeLapsed      Outcome = "lapsed"      // nobody approved in time
	OutcomeFailed      Outcome = "failed"      // the token could not be created or delivered
	OutcomeExpired     Outcome = "expired"     // the token reached its TTL
	OutcomeRevoked     Outcome = "revoked"     // someone revoked it early
	OutcomeCompromised Outcome = "compromised" // its wrapping token was unwrapped by someone else
)

// ReviewsNeeded is how many people, never the requester, must review a
// grant whose token existed.
const ReviewsNeeded = 2

// RequestTTL is how long a request waits for its approval.
const RequestTTL = 30 * time.Minute

// MintTimeout: a grant still minting after this was left by a process that
// stopped; it ends as failed and its token, if any, dies by its TTL.
const MintTimeout = 2 * time.Minute

// BreakGlass is one emergency access request and everything that happened
// to it.
type BreakGlass struct {
	ID        string        `json:"id"`
	Project   string        `json:"project"`
	Env       string        `json:"env"`
	Requester string        `json:"requester"`
	Reason    string        `json:"reason"`
	Incident  string        `json:"incident,omitempty"` // a link, if given
	Duration  time.Duration `json:"duration"`
	Required  int           `json:"required"` // approvals: 0 or 1
	Approver  string        `json:"approver,omitempty"`
	Policies  []string      `json:"policies"`

	Status  GrantStatus `json:"status"`
	Outcome Outcome     `json:"outcome,omitempty"`
	EndedBy string      `json:"ended_by,omitempty"` // a user, when a person ended it
	Note    string      `json:"note,omitempty"`     // why it ended, in words a person reads

	Minter       string    `json:"minter,omitempty"`        // the process creating the token
	Accessor     string    `json:"accessor,omitempty"`      // the token's accessor (never the token)
	WrapAccessor string    `json:"wrap_accessor,omitempty"` // the wrapping token's accessor
	WrapExpires  time.Time `json:"wrap_expires,omitzero"`
	Delivered    bool      `json:"delivered,omitempty"`   // the wrapping token reached the requester's DMs
	UnwrappedAt  time.Time `json:"unwrapped_at,omitzero"` // when Vault was first seen to have no wrapping token any more

	// The announcement in the security channel, and the requester's DM.
	Channel   string `json:"channel"`
	MessageTS string `json:"message_ts,omitempty"`
	Permalink string `json:"permalink,omitempty"`
	DMChannel string `json:"dm_channel,omitempty"`
	DMTS      string `json:"dm_ts,omitempty"`

	Drift   Drift    `json:"drift"`
	Reviews []Review `json:"reviews,omitempty"`

	CreatedAt  time.Time `json:"created_at"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
	MintedAt   time.Time `json:"minted_at,omitzero"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"` // the token's end
	EndedAt    time.Time `json:"ended_at,omitzero"`
	RemindedAt time.Time `json:"reminded_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at"`

	// Seal is serve's signature of the request's terms (Notary.SealGrant).
	Seal attest.Signature `json:"seal,omitzero"`

	Version int64 `json:"version"`
}

// Drift is the plan run after a grant ends: does live infrastructure still
// match the code on the default branch?
type Drift struct {
	State     DriftState `json:"state,omitempty"`
	Runner    string     `json:"runner,omitempty"`
	StartedAt time.Time  `json:"started_at,omitzero"`
	SHA       string     `json:"sha,omitempty"`
	Summary   Summary    `json:"summary"`
	Error     string     `json:"error,omitempty"`
}

// DriftState is how far the drift check got.
type DriftState string

const (
	DriftNone    DriftState = ""        // not started
	DriftRunning DriftState = "running" // claimed by Runner at StartedAt
	DriftClean   DriftState = "clean"   // live infrastructure matches the code
	DriftFound   DriftState = "drift"   // it does not: Summary says how
	DriftFailed  DriftState = "failed"  // the check could not run: Error
)

// Review is one person's sign-off on a grant after it ended.
type Review struct {
	User string    `json:"user"`
	Note string    `json:"note,omitempty"`
	At   time.Time `json:"at"`
}

// Break-glass errors; all are outcomes a person is told about.
var (
	ErrGrantState      = errors.New("the grant is not in a state that allows this")
	ErrSelfReview      = errors.New("the requester cannot review their own grant")
	ErrAlreadyReviewed = errors.New("you already reviewed this grant")
	ErrRequestLapsed   = errors.New("the request waited too long; ask again")
)

// GrantRequest describes a new break-glass request.
type GrantRequest struct {
	ID, Project, Env  string
	Requester, Reason string
	Incident          string
	Duration          time.Duration
	Required          int // 0 or 1
	Policies          []string
	Channel           string // the security channel
	// Minter claims the token's creation at once when Required is 0.
	Minter string
}

// NewBreakGlass starts a grant: requested, or minting when it needs no
// approval.
func NewBreakGlass(r GrantRequest, now time.Time) (BreakGlass, error) {
	if r.ID == "" || r.Env == "" || r.Requester == "" || r.Reason == "" || r.Duration <= 0 || len(r.Policies) == 0 {
		return BreakGlass{}, fmt.Errorf("incomplete break-glass request %+v", r)
	}
	if r.Required != 0 && r.Required != 1 {
		return BreakGlass{}, fmt.Errorf("break-glass needs 0 or 1 approvals, not %d", r.Required)
	}
	g := BreakGlass{
		ID: r.ID, Project: r.Project, Env: r.Env, Requester: r.Requester, Reason: r.Reason, Incident: r.Incident,
		Duration: r.Duration, Required: r.Required, Policies: slices.Clone(r.Policies), Channel: r.Channel,
		Status: GrantRequested, CreatedAt: now, UpdatedAt: now,
	}
	if r.Required == 0 {
		g.Status, g.Minter, g.ApprovedAt = GrantMinting, r.Minter, now
	}
	return g, nil
}

func grantState(g BreakGlass) error {
	return fmt.Errorf("%w (grant %s is %s)", ErrGrantState, g.ID, g.label())
}

func (g BreakGlass) label() string {
	if g.Status == GrantEnded {
		return string(g.Outcome)
	}
	return string(g.Status)
}

// ApproveGrant records the one approval a request needs, and hands the
// token's creation to minter. authorized is the caller's decision, made at
// click time, that user may approve break-glass in this environment.
func ApproveGrant(g BreakGlass, user string, authorized bool, minter string, now time.Time) (BreakGlass, error) {
	if g.Status != GrantRequested {
		return g, grantState(g)
	}
	if RequestLapsed(g, now) {
		return g, ErrRequestLapsed
	}
	if user == g.Requester {
		return g, ErrSelfApproval
	}
	if !authorized {
		return g, ErrNotAuthorized
	}
	g.Approver, g.ApprovedAt, g.Status, g.Minter, g.UpdatedAt = user, now, GrantMinting, minter, now
	return g, nil
}

// RequestLapsed reports whether a request waited past RequestTTL.
func RequestLapsed(g BreakGlass, now time.Time) bool {
	return g.Status == GrantRequested && !now.Before(g.CreatedAt.Add(RequestTTL))
}

// DenyGrant refuses a request; the requester may withdraw their own.
func DenyGrant(g BreakGlass, user string, authorized bool, now time.Time) (BreakGlass, error) {
	if g.Status != GrantRequested {
		return g, grantState(g)
	}
	if user != g.Requester && !authorized {
		return g, ErrNotAuthorized
	}
	note := "denied"
	if user == g.Requester {
		note = "withdrawn by the requester"
	}
	return endGrant(g, OutcomeDenied, user, note, now), nil
}

// Minted records the token: it is active from now for g.Duration.
func Minted(g BreakGlass, accessor, wrapAccessor string, expires, wrapExpires, now time.Time) (BreakGlass, error) {
	if g.Status != GrantMinting {
		return g, grantState(g)
	}
	if accessor == "" || wrapAccessor == "" {
		return g, errors.New("minted without accessors")
	}
	g.Status, g.Accessor, g.WrapAccessor, g.MintedAt, g.ExpiresAt, g.WrapExpires, g.UpdatedAt =
		GrantActive, accessor, wrapAccessor, now, expires, wrapExpires, now
	return g, nil
}

// EndGrant ends a grant that is not over yet: a lapsed request, a failed
// mint, a token that expired, was revoked or was compromised.
func EndGrant(g BreakGlass, o Outcome, by, note string, now time.Time) (BreakGlass, error) {
	ok := false
	switch g.Status {
	case GrantRequested:
		ok = o == OutcomeLapsed
	case GrantMinting:
		ok = o == OutcomeFailed
	case GrantActive:
		ok = o == OutcomeExpired || o == OutcomeRevoked || o == OutcomeCompromised || o == OutcomeFailed
	}
	if !ok {
		return g, fmt.Errorf("%w: cannot end as %s", grantState(g), o)
	}
	return endGrant(g, o, by, note, now), nil
}

func endGrant(g BreakGlass, o Outcome, by, note string, now time.Time) BreakGlass {
	g.Status, g.Outcome, g.EndedBy, g.Note, g.EndedAt, g.UpdatedAt = GrantEnded, o, by, note, now, now
	return g
}

// HadToken reports whether the grant's token ever existed: such a grant is
// checked for drift and reviewed when it ends.
func (g BreakGlass) HadToken() bool { return !g.MintedAt.IsZero() }

// Reviewed reports whether enough people reviewed the grant.
func (g BreakGlass) Reviewed() bool { return len(g.Reviews) >= ReviewsNeeded }

// Closed reports whether nothing more is owed on a grant: it ended, and if
// its token existed, it was reviewed.
func (g BreakGlass) Closed() bool {
	return g.Status == GrantEnded && (!g.HadToken() || g.Reviewed())
}

// MintStalled reports whether the process creating the token went away.
func MintStalled(g BreakGlass, now time.Time) bool {
	return g.Status == GrantMinting && !now.Before(g.ApprovedAt.Add(MintTimeout))
}

// StartDrift claims the drift check of an ended grant for runner. A check
// whose runner stopped (started more than timeout ago) can be claimed again.
func StartDrift(g BreakGlass, runner string, timeout time.Duration, now time.Time) (BreakGlass, error) {
	if g.Status != GrantEnded || !g.HadToken() {
		return g, grantState(g)
	}
	switch {
	case g.Drift.State == DriftNone:
	case g.Drift.State == DriftRunning && !now.Before(g.Drift.StartedAt.Add(timeout)):
	default:
		return g, ErrUnchanged
	}
	g.Drift = Drift{State: DriftRunning, Runner: runner, StartedAt: now}
	g.UpdatedAt = now
	return g, nil
}

// DriftChecked records the drift check's result.
func DriftChecked(g BreakGlass, sha string, s Summary, checkErr error, now time.Time) (BreakGlass, error) {
	if g.Drift.State != DriftRunning {
		return g, ErrUnchanged
	}
	g.Drift.SHA, g.Drift.Summary = sha, s
	switch {
	case checkErr != nil:
		g.Drift.State, g.Drift.Error = DriftFailed, checkErr.Error()
	case s.HasChanges():
		g.Drift.State = DriftFound
	default:
		g.Drift.State = DriftClean
	}
	g.UpdatedAt = now
	return g, nil
}

// ReviewGrant records user's review of an ended grant. authorized is the
// caller's decision that user may review in this environment.
func ReviewGrant(g BreakGlass, user string, authorized bool, note string, now time.Time) (BreakGlass, error) {
	if g.Status != GrantEnded || !g.HadToken() {
		return g, grantState(g)
	}
	if user == g.Requester {
		return g, ErrSelfReview
	}
	if !authorized {
		return g, ErrNotAuthorized
	}
	if slices.ContainsFunc(g.Reviews, func(r Review) bool { return r.User == user }) {
		return g, ErrAlreadyReviewed
	}
	g.Reviews = append(slices.Clone(g.Reviews), Review{User: user, Note: note, At: now})
	g.UpdatedAt = now
	return g, nil
}

// RemindDue reports whether an unreviewed grant is due to be announced
// again, every interval after it ended.
func RemindDue(g BreakGlass, interval time.Duration, now time.Time) bool {
	if g.Status != GrantEnded || !g.HadToken() || g.Reviewed() {
		return false
	}
	last := g.RemindedAt
	if last.IsZero() {
		last = g.EndedAt
	}
	return !now.Before(last.Add(interval))
}

// Reminded records a reminder; of two processes, the one whose write wins
// posts it.
func Reminded(g BreakGlass, interval time.Duration, now time.Time) (BreakGlass, error) {
	if !RemindDue(g, interval, now) {
		return g, ErrUnchanged
	}
	g.RemindedAt, g.UpdatedAt = now, now
	return g, nil
}
