package change

import (
	"errors"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// Stats is told what the service decided, for counting. A metrics
// adapter (promstats) implements it; the service never waits on it, and
// its methods must be cheap and safe for concurrent use.
type Stats interface {
	// Planned: a plan ended with result (a plan status: pending,
	// no_changes, plan_failed); took is how long terraform ran, 0 when
	// unknown (a plan completed by the sweeper).
	Planned(project, env, result string, took time.Duration)
	// Approved: an approval was counted.
	Approved(project, env string)
	// Refused: a command or click was refused; reason is RefusalReason's.
	Refused(reason string)
	// Applied: an apply ended with result (ApplyResult's words).
	Applied(project, env, result string, took time.Duration)
	// LockBusy: a plan found its environment held by another change.
	LockBusy(project, env string)
	// Drift: a drift check of an environment ended; drifted says whether
	// live infrastructure differs from the code.
	Drift(project, env string, drifted bool)
	// GrantsActive: how many break-glass grants are active now.
	GrantsActive(n int)
}

// noStats counts nothing.
type noStats struct{}

func (noStats) Planned(string, string, string, time.Duration) {}
func (noStats) Approved(string, string)                       {}
func (noStats) Refused(string)                                {}
func (noStats) Applied(string, string, string, time.Duration) {}
func (noStats) LockBusy(string, string)                       {}
func (noStats) Drift(string, string, bool)                    {}
func (noStats) GrantsActive(int)                              {}

// refusals name the expected refusals, first match wins; anything else
// is "error".
var refusals = []struct {
	err    error
	reason string
}{
	{approvals.ErrSelfApproval, "self_approval"},
	{approvals.ErrNotAuthorized, "not_authorized"},
	{approvals.ErrPolicyDenied, "policy_denied"},
	{ErrRequirements, "requirements_unmet"},
	{approvals.ErrNotPolicyOwner, "not_policy_owner"},
	{approvals.ErrNotDenied, "not_denied"},
	{approvals.ErrNotPending, "not_pending"},
	{approvals.ErrExpired, "expired"},
	{approvals.ErrNotPromoted, "not_promoted"},
	{approvals.ErrForged, "forged"},
	{runner.ErrLocked, "locked"},
	{runner.ErrStalePlan, "stale_plan"},
	{runner.ErrPRNotFound, "pr_not_found"},
	{runner.ErrPRClosed, "pr_closed"},
	{runner.ErrRefNotFound, "ref_not_found"},
	{runner.ErrNotDefaultBranch, "not_default_branch"},
	{runner.ErrForkPR, "fork_pr"},
	{runner.ErrSource, "source_unavailable"},
	{runner.ErrCredentials, "credentials_unavailable"},
	{ErrNotPlanner, "not_planner"},
	{ErrMembership, "membership_unreadable"},
	{ErrNotAdmin, "not_admin"},
	{ErrStateStore, "state_store_unavailable"},
	{ErrNotOnCall, "not_on_call"},
	{ErrSelfGrant, "self_grant"},
	{ErrNotGrantPeer, "not_grant_peer"},
	{ErrNoBreakGlass, "no_break_glass"},
}

// RefusalReason names why err refused a command or a click, in a small
// fixed set of words (a metrics label).
func RefusalReason(err error) string {
	var ce *ChannelError
	var capErr *CapError
	switch {
	case errors.As(err, &ce):
		return "channel"
	case errors.As(err, &capErr):
		return "over_cap"
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "error"
}

// Refused counts a refusal the front end is about to show; the service
// counts its own.
func (s *Service) Refused(err error) { s.stats.Refused(RefusalReason(err)) }

// applyResult names how an apply ended (a metrics label).
func applyResult(err error) string {
	switch {
	case err == nil:
		return "applied"
	case errors.Is(err, runner.ErrCredentials):
		return "credentials_unavailable"
	case errors.Is(err, runner.ErrAudit):
		return "audit_unavailable"
	case errors.Is(err, runner.ErrStalePlan):
		return "stale_plan"
	case errors.Is(err, runner.ErrInterrupted):
		return "interrupted"
	case errors.Is(err, runner.ErrLockLost):
		return "lock_lost"
	}
	return "failed"
}
