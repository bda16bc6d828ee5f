package approvals

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twokey/twokey/attest"
)

var t0 = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

var someChanges = Summary{Add: 1, Resources: []Resource{{Address: "terraform_data.a", Action: ActionCreate}}}

func pendingPlan(t *testing.T, required int, protected bool) Plan {
	t.Helper()
	p, err := New(Request{
		ID: "p1", Project: "infra", Env: "staging", PR: 42, SHA: "abc1234",
		Requester: "UREQ", Channel: "C1", Fence: 7, LockOwner: "owner",
		Required: required, Protected: protected, TTL: time.Hour,
	}, t0)
	if err != nil {
		t.Fatal(err)
	}
	p, err = Planned(p, "digest-1", someChanges, Assessment{}, time.Hour, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if p, err = testNotary().Seal(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// testNotary signs with a fixed key, so every call returns the same signer.
func testNotary() *Notary {
	seed := make([]byte, ed25519.SeedSize)
	return NewNotary(attest.NewSigner(ed25519.NewKeyFromSeed(seed)), attest.Keyring{})
}

func TestRequiredApprovals(t *testing.T) {
	tests := []struct {
		required  int
		protected bool
		want      int
	}{
		{required: 2, protected: true, want: 2},
		{required: 1, protected: true, want: 2},
		{required: 0, protected: true, want: 2},
		{required: 3, protected: true, want: 3},
		{required: 1, protected: false, want: 1},
		{required: 0, protected: false, want: 1},
	}
	for _, tt := range tests {
		if got := pendingPlan(t, tt.required, tt.protected).Required; got != tt.want {
			t.Errorf("required=%d protected=%v: got %d, want %d", tt.required, tt.protected, got, tt.want)
		}
	}
}

// click is one step of a scenario: user clicks Approve at offset after t0.
type click struct {
	user       string
	authorized bool
	after      time.Duration
	wantErr    error
	want       Result
}

func TestApproveRules(t *testing.T) {
	const min = time.Minute
	tests := []struct {
		name     string
		required int
		clicks   []click
		quorum   bool
	}{
		{
			name: "two distinct approvers reach quorum", required: 2,
			clicks: []click{
				{user: "UA", authorized: true, after: 2 * min, want: Result{Counted: true}},
				{user: "UB", authorized: true, after: 3 * min, want: Result{Counted: true, Quorum: true}},
			},
			quorum: true,
		},
		{
			name: "requester cannot approve even when authorized", required: 2,
			clicks: []click{
				{user: "UREQ", authorized: true, after: 2 * min, wantErr: ErrSelfApproval},
				{user: "UA", authorized: true, after: 3 * min, want: Result{Counted: true}},
			},
		},
		{
			name: "same person twice counts once", required: 2,
			clicks: []click{
				{user: "UA", authorized: true, after: 2 * min, want: Result{Counted: true}},
				{user: "UA", authorized: true, after: 3 * min, want: Result{Duplicate: true}},
			},
		},
		{
			name: "unauthorized click changes nothing", required: 2,
			clicks: []click{
				{user: "UX", authorized: false, after: 2 * min, wantErr: ErrNotAuthorized},
				{user: "UA", authorized: true, after: 3 * min, want: Result{Counted: true}},
			},
		},
		{
			name: "approval after expiry refused", required: 2,
			clicks: []click{
				{user: "UA", authorized: true, after: 2 * min, want: Result{Counted: true}},
				{user: "UB", authorized: true, after: 61 * min, wantErr: ErrExpired},
			},
		},
		{
			name: "three required needs three", required: 3,
			clicks: []click{
				{user: "UA", authorized: true, after: 2 * min, want: Result{Counted: true}},
				{user: "UB", authorized: true, after: 3 * min, want: Result{Counted: true}},
				{user: "UC", authorized: true, after: 4 * min, want: Result{Counted: true, Quorum: true}},
			},
			quorum: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pendingPlan(t, tt.required, true)
			for i, c := range tt.clicks {
				next, got, err := Approve(p, c.user, c.authorized, t0.Add(c.after))
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("click %d by %s: err = %v, want %v", i, c.user, err, c.wantErr)
				}
				if err != nil {
					if next.Version != p.Version || len(next.Approvals) != len(p.Approvals) {
						t.Fatalf("click %d: refused click changed the plan", i)
					}
					continue
				}
				if got != c.want {
					t.Fatalf("click %d by %s: result = %+v, want %+v", i, c.user, got, c.want)
				}
				p = next
			}
			if HasQuorum(p) != tt.quorum {
				t.Fatalf("quorum = %v, want %v (approvers %v)", HasQuorum(p), tt.quorum, Approvers(p))
			}
		})
	}
}

func TestApprovalsBindToPlan(t *testing.T) {
	n := testNotary()
	p := pendingPlan(t, 2, true)
	p, _, _ = n.Approve(p, "UA", true, t0.Add(2*time.Minute))
	p, _, _ = n.Approve(p, "UB", true, t0.Add(3*time.Minute))
	if !HasQuorum(p) {
		t.Fatal("no quorum")
	}
	for name, mutate := range map[string]func(*Plan){
		"digest": func(p *Plan) { p.Digest = "digest-2" },
		"sha":    func(p *Plan) { p.SHA = "def5678" },
		"fence":  func(p *Plan) { p.Fence++ },
	} {
		q := p
		mutate(&q)
		if HasQuorum(q) || len(Approvers(q)) != 0 {
			t.Errorf("approvals survived a change of %s", name)
		}
		if _, _, err := n.BeginApply(q, t0.Add(4*time.Minute)); !errors.Is(err, ErrForged) {
			t.Errorf("BeginApply after %s change: err = %v, want ErrForged (the plan no longer matches its seal)", name, err)
		}
	}
}

func TestBeginApplyOnce(t *testing.T) {
	n := testNotary()
	p := pendingPlan(t, 2, true)
	if _, _, err := n.BeginApply(p, t0.Add(2*time.Minute)); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("without approvals: err = %v", err)
	}
	p, _, _ = n.Approve(p, "UA", true, t0.Add(2*time.Minute))
	p, _, _ = n.Approve(p, "UB", true, t0.Add(3*time.Minute))
	applying, g, err := n.BeginApply(p, t0.Add(4*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if applying.Status != StatusApplying || !g.Valid() || g.PlanID() != "p1" || g.Digest() != "digest-1" ||
		g.Fence() != 7 || g.SHA() != "abc1234" || len(g.Approvers()) != 2 {
		t.Fatalf("bad transition: %+v %+v", applying, g)
	}
	if _, _, err := n.BeginApply(applying, t0.Add(5*time.Minute)); !errors.Is(err, ErrNotPending) {
		t.Fatalf("second BeginApply: err = %v, want ErrNotPending", err)
	}
	if _, _, err := n.Approve(applying, "UC", true, t0.Add(5*time.Minute)); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approve while applying: err = %v", err)
	}
	if (Permit{}).Valid() {
		t.Fatal("zero Grant is valid")
	}

	other := p
	other.ID = "p2"
	_, otherGrant, _ := n.BeginApply(other, t0.Add(4*time.Minute))
	if _, err := Finish(applying, otherGrant, nil, "", t0.Add(6*time.Minute)); !errors.Is(err, ErrPermitMismatch) {
		t.Fatalf("Finish with another plan's permit: err = %v", err)
	}
	done, err := Finish(applying, g, nil, "", t0.Add(6*time.Minute))
	if err != nil || done.Status != StatusApplied {
		t.Fatalf("Finish: %v %s", err, done.Status)
	}
	failed, _ := Finish(applying, g, errors.New("boom"), "boom", t0.Add(6*time.Minute))
	if failed.Status != StatusFailed {
		t.Fatalf("Finish with error: status %s", failed.Status)
	}
	if _, _, err := n.BeginApply(done, t0.Add(7*time.Minute)); !errors.Is(err, ErrNotPending) {
		t.Fatalf("BeginApply on applied plan: err = %v", err)
	}
}

func TestReject(t *testing.T) {
	tests := []struct {
		user       string
		authorized bool
		wantErr    error
	}{
		{user: "UREQ", authorized: false},
		{user: "UA", authorized: true},
		{user: "UX", authorized: false, wantErr: ErrNotAuthorized},
	}
	for _, tt := range tests {
		p := pendingPlan(t, 2, true)
		got, err := Reject(p, tt.user, tt.authorized, "no", t0.Add(2*time.Minute))
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("%s: err = %v, want %v", tt.user, err, tt.wantErr)
		}
		if err == nil && (got.Status != StatusRejected || got.Actor != tt.user) {
			t.Fatalf("%s: got %s by %s", tt.user, got.Status, got.Actor)
		}
	}
}

func TestPlannedWithoutChanges(t *testing.T) {
	p, _ := New(Request{ID: "p", Env: "e", SHA: "s", Requester: "U", Fence: 1, LockOwner: "o", TTL: time.Hour}, t0)
	p, err := Planned(p, "d", Summary{}, Assessment{}, time.Hour, t0)
	if err != nil || p.Status != StatusNoChanges || !p.Status.Terminal() {
		t.Fatalf("got %s, %v", p.Status, err)
	}
}

func TestEnd(t *testing.T) {
	p := pendingPlan(t, 2, true)
	if _, err := End(p, StatusPlanFailed, "x", t0); !errors.Is(err, ErrNotPending) {
		t.Fatalf("plan_failed from pending: %v", err)
	}
	inv, err := End(p, StatusInvalidated, "expired", t0)
	if err != nil || inv.Status != StatusInvalidated {
		t.Fatalf("invalidate: %v", err)
	}
	if _, err := End(inv, StatusInterrupted, "x", t0); !errors.Is(err, ErrNotPending) {
		t.Fatalf("end after end: %v", err)
	}
	if _, err := End(p, StatusApplied, "x", t0); err == nil {
		t.Fatal("End allowed applied")
	}
}

func TestAbortKeepsApprovals(t *testing.T) {
	n := testNotary()
	p := pendingPlan(t, 2, true)
	p, _, _ = n.Approve(p, "UA", true, t0.Add(2*time.Minute))
	p, _, _ = n.Approve(p, "UB", true, t0.Add(3*time.Minute))
	applying, g, err := n.BeginApply(p, t0.Add(4*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	back, err := Abort(applying, g, "vault unavailable", t0.Add(5*time.Minute))
	if err != nil || back.Status != StatusPending || !HasQuorum(back) {
		t.Fatalf("abort: %v %s quorum=%v", err, back.Status, HasQuorum(back))
	}
	if _, err := Abort(back, g, "", t0); !errors.Is(err, ErrNotPending) {
		t.Fatalf("abort of a pending plan: %v", err)
	}
	// A retry after the abort is a fresh BeginApply.
	if _, _, err := n.BeginApply(back, t0.Add(6*time.Minute)); err != nil {
		t.Fatalf("retry after abort: %v", err)
	}
}

func TestPromoted(t *testing.T) {
	applied := t0.Add(-30 * time.Minute)
	tests := []struct {
		name      string
		requires  string
		soak      time.Duration
		isApplied bool
		wantErr   bool
	}{
		{"no requirement", "", time.Hour, false, false},
		{"never applied upstream", "staging", 0, false, true},
		{"applied, no soak", "staging", 0, true, false},
		{"applied, soak passed", "staging", 20 * time.Minute, true, false},
		{"applied, still soaking", "staging", time.Hour, true, true},
	}
	for _, tt := range tests {
		err := Promoted(tt.requires, "abcdef123", tt.soak, applied, tt.isApplied, t0)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrNotPromoted)) {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
	var pe *PromotionError
	if err := Promoted("staging", "abcdef123", time.Hour, applied, true, t0); !errors.As(err, &pe) || pe.Left != 30*time.Minute {
		t.Fatalf("soak left = %+v", pe)
	}
}

func TestGrantOfAndClaim(t *testing.T) {
	n := testNotary()
	p := pendingPlan(t, 2, true)
	if _, err := n.PermitOf(p); !errors.Is(err, ErrNotPending) {
		t.Fatalf("permit for a pending plan: %v", err)
	}
	p, _, _ = n.Approve(p, "UA", true, t0.Add(time.Minute))
	p, _, _ = n.Approve(p, "UB", true, t0.Add(time.Minute))
	applying, g, err := n.BeginApply(p, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	again, err := n.PermitOf(applying)
	if err != nil || again.PlanID() != g.PlanID() || again.Digest() != g.Digest() || again.Fence() != g.Fence() ||
		fmt.Sprint(again.Approvers()) != fmt.Sprint(g.Approvers()) {
		t.Fatalf("GrantFor = %+v, %v; BeginApply gave %+v", again, err, g)
	}
	forged := applying
	forged.Permit = &SignedPermit{Body: append([]byte(nil), applying.Permit.Body...), Sig: applying.Permit.Sig}
	forged.Permit.Body[len(forged.Permit.Body)-2] ^= 1 // the grant edited in storage
	if _, err := n.PermitOf(forged); !errors.Is(err, ErrForged) {
		t.Fatalf("edited permit: %v", err)
	}
	claimed, err := Claim(applying, "runner-1", t0)
	if err != nil || claimed.Executor != "runner-1" {
		t.Fatalf("claim: %v", err)
	}
	if _, err := Claim(claimed, "runner-2", t0); !errors.Is(err, ErrClaimed) {
		t.Fatalf("second claim: %v", err)
	}
	if _, err := Claim(p, "runner-1", t0); !errors.Is(err, ErrNotPending) {
		t.Fatalf("claim of a pending plan: %v", err)
	}
}
