package redisjobs

import (
	"errors"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// Kind is what a job does.
type Kind string

const (
	KindPlan       Kind = "plan"
	KindApply      Kind = "apply"
	KindBreakGlass Kind = "breakglass"        // mint a grant's wrapped token
	KindTokenAlive Kind = "breakglass_alive"  // does a token still exist?
	KindRevoke     Kind = "breakglass_revoke" // revoke a grant's tokens
	KindDrift      Kind = "drift"             // plan the default branch, read-only
	KindVerify     Kind = "verify"            // check an applied revision, read-only
)

// Job is one piece of work for a pool's workers. It carries only names, the
// revision and a permit's accessors: each worker builds the target from its
// own configuration, and an apply's Permit from the plan in the store.
type Job struct {
	ID        string          `json:"id"`
	Kind      Kind            `json:"kind"`
	PlanID    string          `json:"plan_id"` // or a break-glass grant's ID
	Project   string          `json:"project"`
	Env       string          `json:"env"`
	Pool      string          `json:"pool"`
	Rev       runner.Revision `json:"rev,omitzero"`
	Lease     runner.Lease    `json:"lease,omitzero"`
	TTL       time.Duration   `json:"ttl,omitempty"`       // a break-glass token's
	Accessors []string        `json:"accessors,omitempty"` // tokens to look up or revoke
	// Recipient is the one-time X25519 public key a break-glass job's
	// wrapping token is sealed to (see seal.go).
	Recipient []byte `json:"recipient,omitempty"`
	// Verify are a verification job's steps, from serve's configuration.
	Verify *runner.VerifySteps `json:"verify,omitempty"`
	// Permit names an apply job's permit (approvals.Permit.Tag): the worker
	// applies only with that permit, and claims and keeps the result per
	// permit, so a retry is a new attempt and a replay is not.
	Permit string    `json:"permit,omitempty"`
	At     time.Time `json:"at"` // when it was dispatched
}

// event is what a worker reports on a job's event stream.
type event struct {
	Type   string    `json:"type"` // picked, progress, preview, result
	Worker string    `json:"worker,omitempty"`
	At     time.Time `json:"at"`
	Line   string    `json:"line,omitempty"`
	// Preview is what terraform said a plan does, before its result.
	Preview *approvals.Summary `json:"preview,omitempty"`
	Plan    *runner.PlanResult `json:"plan,omitempty"`
	Apply   *applyResult       `json:"apply,omitempty"`
	// SealedWrapped carries a break-glass wrapping token to the serve
	// replica that delivers it, sealed to the job's Recipient; the job's
	// events are deleted once it is read.
	SealedWrapped []byte               `json:"sealed_wrapped,omitempty"`
	Alive         *bool                `json:"alive,omitempty"`
	Drift         *runner.DriftResult  `json:"drift,omitempty"`
	Verify        *runner.VerifyResult `json:"verify,omitempty"`
	Err           *wireError           `json:"err,omitempty"`
}

type applyResult struct {
	Summary   string        `json:"summary"`
	Accessor  string        `json:"accessor"`
	Expires   time.Time     `json:"expires"`
	Duration  time.Duration `json:"duration"`
	RevokeErr string        `json:"revoke_err,omitempty"`
}

func toWire(r runner.ApplyResult) *applyResult {
	a := &applyResult{Summary: r.Summary, Accessor: r.Accessor, Expires: r.Expires, Duration: r.Duration}
	if r.RevokeErr != nil {
		a.RevokeErr = r.RevokeErr.Error()
	}
	return a
}

func (a *applyResult) result() runner.ApplyResult {
	if a == nil {
		return runner.ApplyResult{}
	}
	r := runner.ApplyResult{Summary: a.Summary, Accessor: a.Accessor, Expires: a.Expires, Duration: a.Duration}
	if a.RevokeErr != "" {
		r.RevokeErr = errors.New(a.RevokeErr)
	}
	return r
}

// Errors of the job system.
var (
	ErrWrongPool = errors.New("job is for another runner pool")
	ErrNoRunner  = errors.New("no runner took the job")
	ErrStaleJob  = errors.New("job no longer matches its plan")
)

// sentinels cross the wire by name, so that the serve side can still ask
// errors.Is about a worker's error.
var sentinels = map[string]error{
	"credentials":      runner.ErrCredentials,
	"stale_plan":       runner.ErrStalePlan,
	"lock_lost":        runner.ErrLockLost,
	"stale_fence":      runner.ErrStaleFence,
	"interrupted":      runner.ErrInterrupted,
	"source":           runner.ErrSource,
	"pr_not_found":     runner.ErrPRNotFound,
	"pr_closed":        runner.ErrPRClosed,
	"ref_not_found":    runner.ErrRefNotFound,
	"not_default":      runner.ErrNotDefaultBranch,
	"no_workdir":       runner.ErrNoWorkDir,
	"binary":           runner.ErrBinary,
	"no_plan_file":     runner.ErrNoPlanFile,
	"no_breakglass":    runner.ErrNoBreakGlass,
	"audit":            runner.ErrAudit,
	"wrong_pool":       ErrWrongPool,
	"stale_job":        ErrStaleJob,
	"claimed":          approvals.ErrClaimed,
	"approvals_state":  approvals.ErrNotPending,
	"approvals_quorum": approvals.ErrNoQuorum,
	"forged":           approvals.ErrForged,
	"permit_expired":   approvals.ErrPermitExpired,
}

type wireError struct {
	Kinds  []string `json:"kinds,omitempty"`
	Msg    string   `json:"msg"`
	Step   string   `json:"step,omitempty"` // a TerraformError's
	Output string   `json:"output,omitempty"`
}

func encodeError(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Msg: runner.Redact(err.Error())}
	for name, s := range sentinels {
		if errors.Is(err, s) {
			w.Kinds = append(w.Kinds, name)
		}
	}
	var te *runner.TerraformError
	if errors.As(err, &te) {
		w.Step, w.Output = te.Step, te.Output
	}
	return w
}

// remoteError is a worker's error on the serve side: its message, and every
// sentinel and TerraformError it matched.
type remoteError struct {
	msg  string
	errs []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.errs }

func (w *wireError) err() error {
	if w == nil {
		return nil
	}
	r := &remoteError{msg: w.Msg}
	for _, k := range w.Kinds {
		if s, ok := sentinels[k]; ok {
			r.errs = append(r.errs, s)
		}
	}
	if w.Step != "" {
		r.errs = append(r.errs, &runner.TerraformError{Step: w.Step, Output: w.Output})
	}
	return r
}
