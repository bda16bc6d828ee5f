package ghsync

import (
	"context"
	"testing"

	"github.com/twokey/twokey/approvals"
)

// Each commit status maps onto a check run's status and conclusion:
// pending runs while terraform runs and queues while approvals are
// awaited; everything else completes the run, and only what GitHub counts
// as passing passes.
func TestCheckRunState(t *testing.T) {
	b := &Syncer{o: Options{Scope: func(_, env string) string { return env }, Name: func(_ context.Context, u string) string { return u }}}
	type run struct{ status, conclusion string }
	for _, tt := range []struct {
		status    approvals.Status
		permalink string
		want      map[string]run // by check name
	}{
		{approvals.StatusPlanning, "", map[string]run{"twokey/plan/staging": {"in_progress", ""}}},
		{approvals.StatusPlanFailed, "", map[string]run{"twokey/plan/staging": {"completed", "failure"}}},
		{approvals.StatusNoChanges, "", map[string]run{"twokey/plan/staging": {"completed", "success"}}},
		{approvals.StatusPending, "", map[string]run{"twokey/plan/staging": {"completed", "success"}, "twokey/apply/staging": {"queued", ""}}},
		{approvals.StatusApplying, "", map[string]run{"twokey/plan/staging": {"completed", "success"}, "twokey/apply/staging": {"in_progress", ""}}},
		{approvals.StatusApplied, "", map[string]run{"twokey/plan/staging": {"completed", "success"}, "twokey/apply/staging": {"completed", "success"}}},
		{approvals.StatusFailed, "", map[string]run{"twokey/apply/staging": {"completed", "failure"}}},
		{approvals.StatusRejected, "", map[string]run{"twokey/apply/staging": {"completed", "failure"}}},
		{approvals.StatusInterrupted, "https://slack.example/p", map[string]run{"twokey/apply/staging": {"completed", "action_required"}}},
		{approvals.StatusInterrupted, "", map[string]run{"twokey/apply/staging": {"completed", "failure"}}},
		{approvals.StatusInvalidated, "", map[string]run{"twokey/apply/staging": {"completed", "cancelled"}}},
	} {
		p := approvals.Plan{ID: "p1", Project: "infra", Env: "staging", Status: tt.status, Permalink: tt.permalink, Required: 2}
		got := map[string]run{}
		for _, st := range b.githubStatuses(p) {
			s, c := checkRunState(p, st)
			got[st.context] = run{s, c}
		}
		for name, want := range tt.want {
			if got[name] != want {
				t.Errorf("%s%s: %s = %+v, want %+v", tt.status, map[bool]string{true: " with a link"}[tt.permalink != ""], name, got[name], want)
			}
		}
	}
}
