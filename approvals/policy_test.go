package approvals

import (
	"errors"
	"testing"
	"time"
)

// deniedPlan is a sealed, pending plan that policy denied, needing 2
// approvals, one from "security", and one policy owner's override.
func deniedPlan(t *testing.T, n *Notary) Plan {
	t.Helper()
	p, err := New(Request{
		ID: "p1", Project: "infra", Env: "prod", PR: 42, SHA: "abc1234",
		Requester: "UREQ", Channel: "C1", Fence: 7, LockOwner: "owner",
		Required: 2, Protected: true, OverridesRequired: 1, TTL: time.Hour,
	}, t0)
	if err != nil {
		t.Fatal(err)
	}
	a := Assessment{Checked: true,
		Denied:   []Finding{{Rule: "twokey.network.deny", Message: "0.0.0.0/0 ingress"}},
		Required: 3,
		Groups:   []GroupRequirement{{Group: "security", Reason: "IAM"}},
	}
	if p, err = Planned(p, "digest-1", someChanges, a, time.Hour, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.Required != 3 {
		t.Fatalf("Required = %d, want policy's 3", p.Required)
	}
	if p, err = n.Seal(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// A denial blocks approvals until a policy owner — not the requester, not
// just anyone — overrides it; the override itself approves nothing.
func TestDenialNeedsAnOwnersOverride(t *testing.T) {
	n := testNotary()
	at := t0.Add(2 * time.Minute)
	p := deniedPlan(t, n)
	if _, _, err := n.Approve(p, "UA", true, at, "security"); !errors.Is(err, ErrPolicyDenied) {
		t.Fatalf("approve a denied plan: err = %v, want ErrPolicyDenied", err)
	}
	if _, _, err := n.Override(p, "UX", false, at); !errors.Is(err, ErrNotPolicyOwner) {
		t.Fatalf("override by a non-owner: err = %v, want ErrNotPolicyOwner", err)
	}
	if _, _, err := n.Override(p, "UREQ", true, at); !errors.Is(err, ErrSelfApproval) {
		t.Fatalf("override by the requester: err = %v, want ErrSelfApproval", err)
	}
	p, r, err := n.Override(p, "UOWN", true, at)
	if err != nil || !r.Counted || r.Quorum {
		t.Fatalf("owner's override: %+v, %v", r, err)
	}
	if got := Overriders(p); len(got) != 1 || got[0] != "UOWN" {
		t.Fatalf("Overriders = %v", got)
	}
	for _, u := range []string{"UA", "UB"} {
		if p, r, err = n.Approve(p, u, true, at); err != nil || r.Quorum {
			t.Fatalf("approve %s: %+v, %v", u, r, err)
		}
	}
	if p, r, err = n.Approve(p, "UC", true, at, "security", "dba"); err != nil || !r.Quorum {
		t.Fatalf("third approval, from security: %+v, %v", r, err)
	}
	if got := p.Approvals[2].Groups; len(got) != 1 || got[0] != "security" {
		t.Fatalf("recorded groups %v, want only the required one", got)
	}
	if _, g, err := n.BeginApply(p, at); err != nil || len(g.Approvers()) != 3 {
		t.Fatalf("BeginApply: %v %v", g.Approvers(), err)
	}
	clean := pendingPlan(t, 2, true)
	if _, _, err := n.Override(clean, "UOWN", true, at); !errors.Is(err, ErrNotDenied) {
		t.Fatalf("override of a plan policy passed: err = %v, want ErrNotDenied", err)
	}
}

// A required group that gave no approval keeps the plan from applying,
// however many others approved, in serve (BeginApply) and in whoever mints
// the apply credential (GrantOf).
func TestRequiredGroupGatesTheApply(t *testing.T) {
	n := testNotary()
	at := t0.Add(2 * time.Minute)
	p := deniedPlan(t, n)
	p, _, _ = n.Override(p, "UOWN", true, at)
	for _, u := range []string{"UA", "UB", "UC", "UD"} {
		var err error
		if p, _, err = n.Approve(p, u, true, at, "dba"); err != nil {
			t.Fatal(err)
		}
	}
	if HasQuorum(p) || len(MissingGroups(p)) != 1 {
		t.Fatalf("quorum without security: missing %v", MissingGroups(p))
	}
	if _, _, err := n.BeginApply(p, at); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("BeginApply without security: err = %v, want ErrNoQuorum", err)
	}
}

// A Redis writer edits a sealed plan's policy terms — drops the denial,
// the raised quorum or the required group, hides the destroy — or grants
// a group to an approval or writes an override: nothing of it counts.
func TestPolicyTermsCannotBeForged(t *testing.T) {
	n := testNotary()
	at := t0.Add(2 * time.Minute)
	for name, forge := range map[string]func(Plan) Plan{
		"denial dropped":        func(p Plan) Plan { p.Policy.Denied = nil; return p },
		"quorum lowered":        func(p Plan) Plan { p.Required, p.Policy.Required = 2, 0; return p },
		"required group gone":   func(p Plan) Plan { p.Policy.Groups = nil; return p },
		"overrides not needed":  func(p Plan) Plan { p.OverridesRequired = 0; return p },
		"destroy hidden":        func(p Plan) Plan { p.Summary = Summary{Change: 1}; return p },
		"not protected anymore": func(p Plan) Plan { p.Protected = false; return p },
		"title rewritten":       func(p Plan) Plan { p.Title = "Fix a typo"; return p },
	} {
		t.Run(name, func(t *testing.T) {
			p := forge(deniedPlan(t, n))
			if _, _, err := n.Approve(p, "UA", true, at, "security"); !errors.Is(err, ErrForged) {
				t.Fatalf("approve: err = %v, want ErrForged", err)
			}
			if _, _, err := n.Override(p, "UOWN", true, at); !errors.Is(err, ErrForged) {
				t.Fatalf("override: err = %v, want ErrForged", err)
			}
		})
	}

	t.Run("unsigned override", func(t *testing.T) {
		p := deniedPlan(t, n)
		p.Overrides = []Approval{{User: "UOWN", At: at, Digest: p.Digest, SHA: p.SHA, Fence: p.Fence}}
		if _, _, err := n.Approve(p, "UA", true, at); !errors.Is(err, ErrPolicyDenied) {
			t.Fatalf("approve after a forged override: err = %v, want ErrPolicyDenied", err)
		}
	})
	t.Run("group added to a signed approval", func(t *testing.T) {
		p := deniedPlan(t, n)
		p, _, _ = n.Override(p, "UOWN", true, at)
		for _, u := range []string{"UA", "UB", "UC"} {
			p, _, _ = n.Approve(p, u, true, at)
		}
		p.Approvals[0].Groups = []string{"security"}
		if HasQuorum(n.Signed(p)) {
			t.Fatal("an approval whose groups were edited counted")
		}
		if _, _, err := n.BeginApply(p, at); !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("BeginApply: err = %v, want ErrNoQuorum", err)
		}
	})
	t.Run("grant minted without the group", func(t *testing.T) {
		// serve's own code with a bug — or a key that signs anything — is
		// still checked by the minting side: GrantOf counts the groups.
		p := deniedPlan(t, n)
		p, _, _ = n.Override(p, "UOWN", true, at)
		for _, u := range []string{"UA", "UB", "UC"} {
			p, _, _ = n.Approve(p, u, true, at)
		}
		applying, g, err := beginApplyUnchecked(n, p, at)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.PermitOf(applying); !errors.Is(err, ErrNoQuorum) {
			t.Fatalf("GrantOf without the required group: grant %v, err = %v, want ErrNoQuorum", g.Approvers(), err)
		}
	})
}

// beginApplyUnchecked signs a grant for p as BeginApply would, skipping its
// quorum check: what a serve process with a counting bug would write.
func beginApplyUnchecked(n *Notary, p Plan, now time.Time) (Plan, Permit, error) {
	p.Status, p.UpdatedAt = StatusApplying, now
	body := permitBody{Plan: termsOf(p), Approvals: p.Approvals, Overrides: p.Overrides, IssuedAt: now.UTC(), NotAfter: now.Add(PermitTTL).UTC()}
	raw := mustJSON(body)
	sig, err := n.sign(purposePermit, raw)
	if err != nil {
		return p, Permit{}, err
	}
	p.Permit = &SignedPermit{Body: raw, Sig: sig}
	return p, Permit{approvers: Approvers(p)}, nil
}

// Policy raises the quorum, never lowers it.
func TestPolicyNeverLowersTheQuorum(t *testing.T) {
	p, err := New(Request{ID: "p1", Env: "prod", SHA: "abc", Requester: "UREQ", Fence: 1, LockOwner: "o", Required: 3, TTL: time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ = Planned(p, "d", someChanges, Assessment{Required: 1}, time.Hour, t0); p.Required != 3 {
		t.Fatalf("Required = %d after policy asked for 1, want 3", p.Required)
	}
}
