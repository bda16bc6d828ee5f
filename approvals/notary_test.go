package approvals

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/twokey/twokey/attest"
)

func newSigner(t *testing.T) *attest.Signer {
	t.Helper()
	s, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// approvedPlan is a sealed plan with UA's and UB's signed approvals.
func approvedPlan(t *testing.T, n *Notary) Plan {
	t.Helper()
	p := pendingPlan(t, 2, true)
	p, err := n.Seal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"UA", "UB"} {
		if p, _, err = n.Approve(p, u, true, t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// A Redis writer adds an approval to a pending plan, unsigned or signed by a
// key nobody trusts: it does not count, and the next real click is one of
// two, not the second.
func TestForgedApprovalDoesNotCount(t *testing.T) {
	n := NewNotary(newSigner(t), attest.Keyring{})
	rogue := NewNotary(newSigner(t), attest.Keyring{})
	for name, forge := range map[string]func(Plan) Plan{
		"unsigned": func(p Plan) Plan {
			p.Approvals = append(p.Approvals, Approval{User: "UA", At: t0, Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
			return p
		},
		"signed by an untrusted key": func(p Plan) Plan {
			q, _ := rogue.Seal(p)
			q, _, _ = rogue.Approve(q, "UA", true, t0.Add(time.Minute))
			p.Approvals = q.Approvals
			return p
		},
		"another plan's signed approval": func(p Plan) Plan {
			other := p
			other.ID = "p-other"
			other, _ = n.Seal(other)
			other, _, _ = n.Approve(other, "UA", true, t0.Add(time.Minute))
			p.Approvals = other.Approvals
			return p
		},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := n.Seal(pendingPlan(t, 2, true))
			if err != nil {
				t.Fatal(err)
			}
			p = forge(p)
			if HasQuorum(p) {
				t.Fatal("setup: one forged approval is a quorum")
			}
			next, r, err := n.Approve(p, "UB", true, t0.Add(2*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if !r.Counted || r.Quorum || r.Forged != 1 || len(next.Approvals) != 1 || next.Approvals[0].User != "UB" {
				t.Fatalf("result %+v, approvals %+v: the forged approval counted or stayed", r, next.Approvals)
			}
			// Even if the forged approval is put back, BeginApply ignores it.
			next.Approvals = append(next.Approvals, forge(p).Approvals...)
			if _, _, err := n.BeginApply(next, t0.Add(3*time.Minute)); !errors.Is(err, ErrNoQuorum) || !errors.Is(err, ErrForged) {
				t.Fatalf("BeginApply with a forged second approval: %v", err)
			}
		})
	}
}

// A Redis writer edits the terms of a sealed plan — who asked, how many
// approvals it needs, what it applies — and no click is counted on it.
func TestSealedTermsCannotBeEdited(t *testing.T) {
	n := NewNotary(newSigner(t), attest.Keyring{})
	p, err := n.Seal(pendingPlan(t, 2, true))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Plan){
		"requester": func(p *Plan) { p.Requester = "USOMEONE" },
		"required":  func(p *Plan) { p.Required = 1 },
		"digest":    func(p *Plan) { p.Digest = "digest-2" },
		"expiry":    func(p *Plan) { p.ExpiresAt = p.ExpiresAt.Add(time.Hour) },
		"env":       func(p *Plan) { p.Env = "prod" },
		"unsealed":  func(p *Plan) { p.Seal = attest.Signature{} },
	} {
		q := p
		edit(&q)
		if _, _, err := n.Approve(q, "UA", true, t0.Add(2*time.Minute)); !errors.Is(err, ErrForged) {
			t.Errorf("%s edited: Approve err = %v, want ErrForged", name, err)
		}
		if _, _, err := n.BeginApply(q, t0.Add(2*time.Minute)); !errors.Is(err, ErrForged) {
			t.Errorf("%s edited: BeginApply err = %v, want ErrForged", name, err)
		}
	}
}

// A Redis writer sets a plan to applying with made-up approvals, or with a
// grant they edited, signed themselves, or took from another plan: the
// process that would mint credentials refuses all of them.
func TestForgedGrantRefused(t *testing.T) {
	serve := NewNotary(newSigner(t), attest.Keyring{})
	worker := NewNotary(nil, attest.NewKeyring(serve.signer.Public())) // a runner: public keys only
	rogue := NewNotary(newSigner(t), attest.Keyring{})

	applying, g, err := serve.BeginApply(approvedPlan(t, serve), t0.Add(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := worker.PermitOf(applying); err != nil || got.PlanID() != g.PlanID() || len(got.Approvers()) != 2 {
		t.Fatalf("the worker refuses a real grant: %+v %v", got, err)
	}

	resign := func(p Plan, n *Notary, edit func(*permitBody)) Plan {
		var body permitBody
		if err := json.Unmarshal(p.Permit.Body, &body); err != nil {
			t.Fatal(err)
		}
		edit(&body)
		raw, _ := json.Marshal(body)
		sig := attest.Signature{KeyID: p.Permit.Sig.KeyID, Sig: p.Permit.Sig.Sig}
		if n != nil {
			sig, _ = n.sign(purposePermit, raw)
		}
		p.Permit = &SignedPermit{Body: raw, Sig: sig}
		return p
	}
	pending := approvedPlan(t, serve)
	other := pending
	other.ID = "p-other"
	other, _ = serve.Seal(other)
	other.Approvals = nil
	for _, u := range []string{"UA", "UB"} {
		other, _, _ = serve.Approve(other, u, true, t0.Add(2*time.Minute))
	}
	otherApplying, _, err := serve.BeginApply(other, t0.Add(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}

	for name, p := range map[string]Plan{
		"made-up approvals, no grant": func() Plan {
			p := pending
			p.Status = StatusApplying
			p.Approvals = append(p.Approvals, Approval{User: "UX", Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
			return p
		}(),
		"grant edited (approver dropped)": resign(applying, nil, func(b *permitBody) { b.Approvals = b.Approvals[:1] }),
		"grant edited (longer life)":      resign(applying, nil, func(b *permitBody) { b.NotAfter = b.NotAfter.Add(time.Hour) }),
		"grant signed by an untrusted key": resign(applying, rogue, func(b *permitBody) {
			b.Approvals = []Approval{{User: "UX"}, {User: "UY"}}
		}),
		"another plan's grant": func() Plan { p := applying; p.Permit = otherApplying.Permit; return p }(),
		// A trusted signer that signed unsigned approvals (a bug, say):
		// the quorum is counted again from the approvals' own signatures.
		"trusted grant, unsigned approvals": resign(applying, serve, func(b *permitBody) {
			for i := range b.Approvals {
				b.Approvals[i].Sig = attest.Signature{}
			}
		}),
		"trusted grant, more approvals required than signed": resign(applying, serve, func(b *permitBody) { b.Plan.Required = 3 }),
		"trusted grant, an approver is the requester":        resign(applying, serve, func(b *permitBody) { b.Plan.Requester = "UA" }),
	} {
		if _, err := worker.PermitOf(p); !errors.Is(err, ErrForged) {
			t.Errorf("%s: GrantOf err = %v, want ErrForged", name, err)
		}
	}
}

// A grant lets an apply start only for GrantTTL.
func TestGrantRunsOut(t *testing.T) {
	n := NewNotary(newSigner(t), attest.Keyring{})
	_, g, err := n.BeginApply(approvedPlan(t, n), t0.Add(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(t0.Add(4 * time.Minute)); err != nil {
		t.Fatalf("fresh grant: %v", err)
	}
	if err := g.Check(t0.Add(3*time.Minute + PermitTTL)); !errors.Is(err, ErrPermitExpired) {
		t.Fatalf("old grant: %v", err)
	}
	if err := (Permit{}).Check(t0); !errors.Is(err, ErrForged) {
		t.Fatalf("zero grant: %v", err)
	}
}

// Key rotation: a grant signed with the old key still verifies after the
// new key is added; once the old key is removed, it no longer does.
func TestKeyRotation(t *testing.T) {
	old, next := newSigner(t), newSigner(t)
	serveOld := NewNotary(old, attest.Keyring{})
	applying, _, err := serveOld.BeginApply(approvedPlan(t, serveOld), t0.Add(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	both := NewNotary(nil, attest.NewKeyring(old.Public(), next.Public()))
	if _, err := both.PermitOf(applying); err != nil {
		t.Fatalf("old grant after adding the new key: %v", err)
	}
	// The new key signs from now on; plans sealed with the old key still
	// take approvals while it is trusted.
	serveNew := NewNotary(next, attest.NewKeyring(old.Public()))
	pending := approvedPlan(t, serveOld)
	pending.Approvals = pending.Approvals[:1]
	if _, r, err := serveNew.Approve(pending, "UC", true, t0.Add(3*time.Minute)); err != nil || !r.Quorum {
		t.Fatalf("approval across the rotation: %+v %v", r, err)
	}
	onlyNew := NewNotary(nil, attest.NewKeyring(next.Public()))
	if _, err := onlyNew.PermitOf(applying); !errors.Is(err, ErrForged) || !errors.Is(err, attest.ErrUnknownKey) {
		t.Fatalf("old grant after removing the old key: %v", err)
	}
}

// What signing costs serve per click and per apply, and a worker per
// verified grant.
func BenchmarkNotary(b *testing.B) {
	signer, _ := attest.GenerateSigner()
	n := NewNotary(signer, attest.Keyring{})
	worker := NewNotary(nil, attest.NewKeyring(signer.Public()))
	p, _ := New(Request{ID: "p1", Project: "infra", Env: "prod", SHA: "abc", Requester: "UREQ", Fence: 1, LockOwner: "o",
		Required: 2, Protected: true, TTL: time.Hour}, t0)
	p, _ = Planned(p, "digest", someChanges, Assessment{}, time.Hour, t0)
	p, _ = n.Seal(p)
	b.Run("approve", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := n.Approve(p, "UA", true, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	q, _, _ := n.Approve(p, "UA", true, t0)
	q, _, _ = n.Approve(q, "UB", true, t0)
	b.Run("begin_apply", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := n.BeginApply(q, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	applying, _, _ := n.BeginApply(q, t0)
	b.Run("permit_of", func(b *testing.B) {
		for b.Loop() {
			if _, err := worker.PermitOf(applying); err != nil {
				b.Fatal(err)
			}
		}
	})
}
