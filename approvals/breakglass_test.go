package approvals

import (
	"errors"
	"testing"
	"time"
)

func request(required int) GrantRequest {
	return GrantRequest{ID: "bg-1", Project: "infra", Env: "prod", Requester: "UERIN", Reason: "db failover stuck",
		Duration: 30 * time.Minute, Required: required, Policies: []string{"prod-breakglass"}, Channel: "CSEC", Minter: "serve"}
}

func TestBreakGlassLife(t *testing.T) {
	g, err := NewBreakGlass(request(1), t0)
	if err != nil || g.Status != GrantRequested {
		t.Fatalf("new: %v %+v", err, g)
	}
	if _, err := ApproveGrant(g, "UERIN", true, "serve", t0); !errors.Is(err, ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	if _, err := ApproveGrant(g, "UDAVE", false, "serve", t0); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("unauthorized approval: %v", err)
	}
	if _, err := ApproveGrant(g, "UBOB", true, "serve", t0.Add(RequestTTL)); !errors.Is(err, ErrRequestLapsed) {
		t.Fatalf("lapsed approval: %v", err)
	}
	g, err = ApproveGrant(g, "UBOB", true, "serve", t0.Add(time.Minute))
	if err != nil || g.Status != GrantMinting || g.Approver != "UBOB" || g.Minter != "serve" {
		t.Fatalf("approve: %v %+v", err, g)
	}
	if _, err := ApproveGrant(g, "UCAROL", true, "other", t0.Add(time.Minute)); !errors.Is(err, ErrGrantState) {
		t.Fatalf("second approval of a minting grant: %v", err)
	}
	if _, err := StartDrift(g, "serve", time.Minute, t0); !errors.Is(err, ErrGrantState) {
		t.Fatalf("drift before the end: %v", err)
	}
	g, err = Minted(g, "acc-token", "acc-wrap", t0.Add(31*time.Minute), t0.Add(6*time.Minute), t0.Add(time.Minute))
	if err != nil || g.Status != GrantActive || !g.HadToken() || g.Closed() {
		t.Fatalf("minted: %v %+v", err, g)
	}
	if _, err := ReviewGrant(g, "UBOB", true, "", t0); !errors.Is(err, ErrGrantState) {
		t.Fatalf("review of an active grant: %v", err)
	}
	if _, err := EndGrant(g, OutcomeLapsed, "", "", t0); !errors.Is(err, ErrGrantState) {
		t.Fatalf("an active grant cannot lapse: %v", err)
	}
	g, err = EndGrant(g, OutcomeRevoked, "UBOB", "done early", t0.Add(10*time.Minute))
	if err != nil || g.Status != GrantEnded || g.Outcome != OutcomeRevoked || g.Closed() {
		t.Fatalf("revoke: %v %+v", err, g)
	}
	if _, err := EndGrant(g, OutcomeExpired, "", "", t0.Add(time.Hour)); !errors.Is(err, ErrGrantState) {
		t.Fatalf("an ended grant cannot end again: %v", err)
	}

	// The drift check is claimed once; a stalled one can be taken over.
	g, err = StartDrift(g, "serve", 5*time.Minute, t0.Add(10*time.Minute))
	if err != nil || g.Drift.State != DriftRunning {
		t.Fatalf("start drift: %v %+v", err, g.Drift)
	}
	if _, err := StartDrift(g, "other", 5*time.Minute, t0.Add(11*time.Minute)); !errors.Is(err, ErrUnchanged) {
		t.Fatalf("second drift claim: %v", err)
	}
	if g2, err := StartDrift(g, "other", 5*time.Minute, t0.Add(16*time.Minute)); err != nil || g2.Drift.Runner != "other" {
		t.Fatalf("takeover of a stalled drift check: %v %+v", err, g2.Drift)
	}
	g, err = DriftChecked(g, "abc", Summary{Change: 1}, nil, t0.Add(12*time.Minute))
	if err != nil || g.Drift.State != DriftFound {
		t.Fatalf("drift: %v %+v", err, g.Drift)
	}

	// Reviews: never the requester, never twice, two people close it.
	if _, err := ReviewGrant(g, "UERIN", true, "", t0); !errors.Is(err, ErrSelfReview) {
		t.Fatalf("self review: %v", err)
	}
	if _, err := ReviewGrant(g, "UDAVE", false, "", t0); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("unauthorized review: %v", err)
	}
	if !RemindDue(g, 24*time.Hour, t0.Add(25*time.Hour)) || RemindDue(g, 24*time.Hour, t0.Add(23*time.Hour)) {
		t.Fatal("reminder due a day after the end")
	}
	g, _ = Reminded(g, 24*time.Hour, t0.Add(25*time.Hour))
	if RemindDue(g, 24*time.Hour, t0.Add(48*time.Hour)) || !RemindDue(g, 24*time.Hour, t0.Add(49*time.Hour)) {
		t.Fatal("next reminder a day after the last")
	}
	g, err = ReviewGrant(g, "UBOB", true, "resized the db; PR #51 brings it into code", t0.Add(26*time.Hour))
	if err != nil || g.Reviewed() {
		t.Fatalf("first review: %v", err)
	}
	if _, err := ReviewGrant(g, "UBOB", true, "", t0); !errors.Is(err, ErrAlreadyReviewed) {
		t.Fatalf("second review by the same person: %v", err)
	}
	g, err = ReviewGrant(g, "UCAROL", true, "", t0.Add(27*time.Hour))
	if err != nil || !g.Reviewed() || !g.Closed() || RemindDue(g, time.Hour, t0.Add(100*time.Hour)) {
		t.Fatalf("second review: %v %+v", err, g)
	}
}

func TestBreakGlassSelfServiceAndEnds(t *testing.T) {
	g, err := NewBreakGlass(request(0), t0)
	if err != nil || g.Status != GrantMinting || g.Approver != "" {
		t.Fatalf("self-service starts minting: %v %+v", err, g)
	}
	if !MintStalled(g, t0.Add(MintTimeout)) || MintStalled(g, t0.Add(MintTimeout-time.Second)) {
		t.Fatal("a mint stalls after MintTimeout")
	}
	failed, err := EndGrant(g, OutcomeFailed, "", "vault unavailable", t0)
	if err != nil || !failed.Closed() {
		t.Fatalf("a failed mint with no token is closed: %v %+v", err, failed)
	}
	if _, err := NewBreakGlass(request(2), t0); err == nil {
		t.Fatal("two approvals accepted")
	}
	r := request(1)
	r.Reason = ""
	if _, err := NewBreakGlass(r, t0); err == nil {
		t.Fatal("no reason accepted")
	}

	g, _ = NewBreakGlass(request(1), t0)
	if _, err := DenyGrant(g, "UDAVE", false, t0); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("unauthorized deny: %v", err)
	}
	w, err := DenyGrant(g, "UERIN", false, t0)
	if err != nil || w.Outcome != OutcomeDenied || !w.Closed() {
		t.Fatalf("withdraw: %v %+v", err, w)
	}
	l, err := EndGrant(g, OutcomeLapsed, "", "nobody approved", t0.Add(RequestTTL))
	if err != nil || !l.Closed() || l.HadToken() {
		t.Fatalf("lapse: %v %+v", err, l)
	}
	if _, err := StartDrift(l, "serve", time.Minute, t0); !errors.Is(err, ErrGrantState) {
		t.Fatalf("drift of a grant without a token: %v", err)
	}
}
