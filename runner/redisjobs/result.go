package redisjobs

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
)

// Every job's result is signed by the worker that ran it, as its jobs are
// by serve: a plan's result becomes the terms serve seals (summary, policy
// assessment, digest), an apply's becomes the record, a break-glass token
// goes to a person. A Redis writer could otherwise edit the result on the
// job's event stream, or the kept result a sweeping replica completes a
// detached plan from, and have serve seal a plan with its policy denial,
// raised quorum, required groups or destroys taken out. The signature
// covers the job's ID, plan ID, kind, pool and lease fence with the result,
// so a result cannot be moved to another job, plan or fence either. serve
// acts on no result that a runner key (signing.runner_keys) did not sign:
// one that does not verify is treated as no result at all (and logged and
// recorded as a forgery), so the plan fails closed.

// purposeResult is what a job result's signature is for; no other
// signature in twokey is made for it.
const purposeResult = "job result"

// resultStatement is what a worker signs: which job, and its result event.
type resultStatement struct {
	Job    string          `json:"job"`
	PlanID string          `json:"plan_id"`
	Kind   Kind            `json:"kind"`
	Pool   string          `json:"pool"`
	Fence  int64           `json:"fence"`            // the plan job's lease fence; 0 for other kinds
	Permit string          `json:"permit,omitempty"` // an apply job's permit (Job.Permit)
	Event  json.RawMessage `json:"event"`
}

// signedResult is a result on the job's event stream (its "event" field,
// where a "picked" or "progress" event is plain) and in the kept result: the
// statement's exact bytes (compact JSON, readable in Redis) and the
// worker's signature of them. Any other bytes do not verify.
type signedResult struct {
	Statement json.RawMessage  `json:"statement"`
	Sig       attest.Signature `json:"sig"`
}

// signResult signs ev as the result of j, run by a worker of pool.
func signResult(s *attest.Signer, j Job, pool string, ev event) ([]byte, error) {
	if s == nil {
		return nil, errors.New("redisjobs: this worker has no signing key, so serve would trust none of its results")
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	stmt, err := json.Marshal(resultStatement{Job: j.ID, PlanID: j.PlanID, Kind: j.Kind, Pool: pool, Fence: j.Lease.Fence,
		Permit: j.Permit, Event: raw})
	if err != nil {
		return nil, err
	}
	return json.Marshal(signedResult{Statement: stmt, Sig: s.Sign(purposeResult, stmt)})
}

// expect is what a reader knows of the job whose result it reads.
type expect struct {
	job    string // "" when unknown (a kept result)
	planID string
	kind   Kind
	pool   string
	fence  int64
	permit string // an apply's: the attempt it is read for
}

// errUnsignedResult is a result that no trusted runner key signed for the
// job it was read for.
var errUnsignedResult = fmt.Errorf("%w: job result", approvals.ErrForged)

// openResult verifies raw against the trusted runner keys and checks that
// it is the result of the job want describes; only then is its event
// returned.
func openResult(keys attest.Keyring, raw []byte, want expect) (event, error) {
	var sr signedResult
	if err := json.Unmarshal(raw, &sr); err != nil {
		return event{}, fmt.Errorf("%w is not a signed result: %w", errUnsignedResult, err)
	}
	if err := keys.Verify(purposeResult, sr.Statement, sr.Sig); err != nil {
		return event{}, fmt.Errorf("%w is %w", errUnsignedResult, err)
	}
	var st resultStatement
	if err := json.Unmarshal(sr.Statement, &st); err != nil {
		return event{}, fmt.Errorf("%w: signed statement unreadable: %w", errUnsignedResult, err)
	}
	if (want.job != "" && st.Job != want.job) || st.PlanID != want.planID || st.Kind != want.kind || st.Pool != want.pool ||
		st.Fence != want.fence || st.Permit != want.permit {
		return event{}, fmt.Errorf("%w is signed for job %s (plan %s, %s, pool %s, fence %d, permit %q), not for job %s (plan %s, %s, pool %s, fence %d, permit %q)",
			errUnsignedResult, st.Job, st.PlanID, st.Kind, st.Pool, st.Fence, st.Permit, want.job, want.planID, want.kind, want.pool, want.fence, want.permit)
	}
	var ev event
	if err := json.Unmarshal(st.Event, &ev); err != nil || ev.Type != "result" {
		return event{}, fmt.Errorf("%w: signed statement holds no result event", errUnsignedResult)
	}
	return ev, nil
}
