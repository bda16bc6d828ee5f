package bot

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

const pSecurity, pOnCall = "CSEC", "SONCALL"

// withBreakGlass gives the harness's staging environment break-glass: erin
// and alice on call, one approval, announced in #security.
func withBreakGlass(t *testing.T) *policyHarness {
	t.Helper()
	h := newPolicyHarness(t)
	h.slack.AddChannel(pSecurity, "security")
	h.slack.SetGroup(pOnCall, pErin, pAlice)
	h.slack.SetGroup(pGroup, pBob, pCarol)
	one := 1
	h.cfg.Admins = config.Who{Users: []string{pDave}}
	h.b.o.VaultAddress = "http://vault.invalid:8200"
	h.b.o.BreakGlass = []BreakGlassTarget{{Project: "infra", Env: "staging", MaxTTL: time.Hour}}
	h.cfg.Projects[0].Environments[0].BreakGlass = &config.BreakGlass{
		OnCall: config.Who{Groups: []string{pOnCall}}, MaxTTL: config.Duration(time.Hour), Approvals: &one,
		Role: "twokey-staging-breakglass", Policies: []string{"staging-breakglass"}, WrapTTL: config.Duration(5 * time.Minute),
		Channel: pSecurity, RemindEvery: config.Duration(24 * time.Hour),
	}
	return h
}

// grant returns the only grant.
func (h *policyHarness) grant(t *testing.T) approvals.BreakGlass {
	t.Helper()
	gs, err := h.store.OpenGrants(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 {
		t.Fatalf("%d open grants, want 1", len(gs))
	}
	return gs[0]
}

// sweep runs the grant sweeper and waits for what it started.
func (h *policyHarness) sweep() {
	h.svc.Sweep(context.Background())
	h.svc.Idle()
}

// said reports whether a message in channel (a DM: "D"+user) contains text.
func (h *policyHarness) said(channel, text string) bool {
	for _, m := range h.slack.Messages() {
		if m.Channel == channel && strings.Contains(m.Content(), text) {
			return true
		}
	}
	return false
}

func TestBreakGlassRequestLapses(t *testing.T) {
	h := withBreakGlass(t)
	h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
	g := h.grant(t)
	if g.Status != approvals.GrantRequested || g.MessageTS == "" {
		t.Fatalf("requested: %+v", g)
	}
	h.now = h.now.Add(approvals.RequestTTL - time.Second)
	h.sweep()
	if h.grant(t).Status != approvals.GrantRequested {
		t.Fatal("lapsed early")
	}
	h.now = h.now.Add(time.Second)
	h.sweep()
	if gs, _ := h.store.OpenGrants(context.Background()); len(gs) != 0 {
		t.Fatalf("a lapsed request stays open: %+v", gs)
	}
	if !h.said("DERIN", "lapsed") {
		t.Fatal("erin was not told the request lapsed")
	}
	// An approval after the request lapsed does nothing.
	h.press(h.envelope(), pBob, actionBGApprove, g.ID)
	if len(h.run.revoked) != 0 || h.said("DERIN", "vault unwrap") {
		t.Fatal("a lapsed request was granted")
	}
}

// An approved grant expires by the clock: the bot confirms the token is
// gone (revoking it if Vault still has it), runs the drift check, asks for
// review, and reminds daily until two people reviewed.
func TestBreakGlassExpiryDriftAndReminders(t *testing.T) {
	h := withBreakGlass(t)
	ctx := context.Background()
	h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
	id := h.grant(t).ID
	h.press(h.envelope(), pAlice, actionBGApprove, id) // another on-call engineer
	g := h.grant(t)
	if g.Status != approvals.GrantActive || !g.Delivered || g.Approver != pAlice || !h.said("DERIN", "vault unwrap hvs.wrap-"+id) {
		t.Fatalf("approved grant: %+v", g)
	}
	// The announcement counts down as the minutes pass.
	h.now = h.now.Add(10 * time.Minute)
	h.sweep()
	if !h.said(pSecurity, "20m left") {
		t.Fatal("the announcement does not count down")
	}
	h.now = g.ExpiresAt
	h.sweep()
	g, _ = h.store.GetGrant(ctx, id)
	if g.Outcome != approvals.OutcomeExpired || !h.run.revoked["acc-"+id] || g.Drift.State != approvals.DriftClean || h.run.drifts != 1 {
		t.Fatalf("expired grant: %+v (revoked %v, drifts %d)", g, h.run.revoked, h.run.drifts)
	}
	h.sweep() // the drift check runs once
	if h.run.drifts != 1 {
		t.Fatalf("drift checks: %d", h.run.drifts)
	}

	reminders := func() int {
		n := 0
		for _, m := range h.slack.Messages() {
			if m.Channel == pSecurity && strings.Contains(m.Content(), "still *unreviewed*") {
				n++
			}
		}
		return n
	}
	h.now = h.now.Add(24 * time.Hour)
	h.sweep()
	h.sweep()
	if reminders() != 1 {
		t.Fatalf("reminders after a day: %d", reminders())
	}
	h.now = h.now.Add(24 * time.Hour)
	h.sweep()
	if reminders() != 2 {
		t.Fatalf("reminders after two days: %d", reminders())
	}
	if err := h.svc.Review(ctx, pErin, id, ""); !errors.Is(err, approvals.ErrSelfReview) {
		t.Fatalf("self review: %v", err)
	}
	if err := h.svc.Review(ctx, pAlice, id, ""); !errors.Is(err, change.ErrNotReviewer) {
		t.Fatalf("an on-call peer is not a reviewer: %v", err)
	}
	for _, u := range []string{pBob, pDave} { // an approver and an admin
		if err := h.svc.Review(ctx, u, id, "ok"); err != nil {
			t.Fatal(err)
		}
	}
	if gs, _ := h.store.OpenGrants(ctx); len(gs) != 0 {
		t.Fatalf("a reviewed grant stays open: %+v", gs)
	}
	h.now = h.now.Add(48 * time.Hour)
	h.sweep()
	if reminders() != 2 {
		t.Fatal("a reviewed grant was re-announced")
	}
}

// A wrapping token that was unwrapped on its way, or that Vault says came
// from elsewhere, is never delivered: the token is revoked as compromised.
func TestBreakGlassInterceptedBeforeDelivery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *policyHarness, id string)
	}{
		{"unwrapped", func(h *policyHarness, id string) { h.wrap.used["hvs.wrap-"+id] = true }},
		{"swapped", func(h *policyHarness, _ string) { h.wrap.path = "auth/token/create/twokey-prod-apply" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := withBreakGlass(t)
			h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
			id := h.grant(t).ID
			tc.setup(h, id)
			h.press(h.envelope(), pBob, actionBGApprove, id)
			g, _ := h.store.GetGrant(context.Background(), id)
			if g.Outcome != approvals.OutcomeCompromised || !h.run.revoked["acc-"+id] || !h.run.revoked["wacc-"+id] {
				t.Fatalf("grant: %+v, revoked %v", g, h.run.revoked)
			}
			if h.said("DERIN", "vault unwrap") || !h.said("DERIN", "compromised") {
				t.Fatal("the compromised token was delivered, or erin was not told")
			}
		})
	}
}

// Vault unavailable: the grant fails, nothing is delivered, erin is told.
func TestBreakGlassVaultDown(t *testing.T) {
	h := withBreakGlass(t)
	h.run.bgErr = runner.ErrCredentials
	h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
	h.press(h.envelope(), pBob, actionBGApprove, h.grant(t).ID)
	if gs, _ := h.store.OpenGrants(context.Background()); len(gs) != 0 {
		t.Fatalf("a failed grant with no token stays open: %+v", gs)
	}
	if !h.said("DERIN", "Vault is unavailable") || h.said("DERIN", "vault unwrap") {
		t.Fatal("erin was not told, or got a token")
	}
}

// A process that stopped while minting leaves the grant minting; the
// sweeper ends it as failed after MintTimeout.
func TestBreakGlassStalledMint(t *testing.T) {
	h := withBreakGlass(t)
	ctx := context.Background()
	g, err := approvals.NewBreakGlass(approvals.GrantRequest{ID: "bg-stalled2", Project: "infra", Env: "staging",
		Requester: pErin, Reason: "fire", Duration: time.Minute, Policies: []string{"p"}, Channel: pSecurity, Minter: "gone"}, h.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	h.now = h.now.Add(approvals.MintTimeout)
	h.sweep()
	if g, _ := h.store.GetGrant(ctx, g.ID); g.Outcome != approvals.OutcomeFailed {
		t.Fatalf("stalled mint: %+v", g)
	}
}

// Revoke: who may, and what a revoke of a request does.
func TestBreakGlassRevokeRights(t *testing.T) {
	h := withBreakGlass(t)
	h.slack.AddUser(slacksim.User{ID: "UFRANK", Name: "frank"})
	h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
	id := h.grant(t).ID
	h.press(h.envelope(), pBob, actionBGApprove, id)
	h.command(h.envelope(), "UFRANK", "breakglass revoke "+id)
	if h.grant(t).Status != approvals.GrantActive {
		t.Fatal("frank revoked a grant")
	}
	h.command(h.envelope(), pDave, "breakglass revoke "+id) // an admin
	if g := h.grant(t); g.Outcome != approvals.OutcomeRevoked || g.EndedBy != pDave || !h.run.revoked["acc-"+id] {
		t.Fatalf("admin revoke: %+v", g)
	}
	if !h.said("DERIN", "revoked by <@"+pDave+">") {
		t.Fatal("erin was not told")
	}
}

// A Redis writer who also has a Slack account (dave: not on call) edits a
// pending break-glass request to name himself and a longer duration; the
// approver clicks on the message that still shows erin's request. Nothing
// is minted, nobody gets a token, and the record says why.
func TestForgedBreakGlassRequestIsRefused(t *testing.T) {
	h := withBreakGlass(t)
	ctx := context.Background()
	h.command(h.envelope(), pErin, `breakglass staging 30m "fire"`)
	id := h.grant(t).ID
	if _, err := approvals.UpdateGrant(ctx, h.store, id, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
		g.Requester, g.Duration = pDave, time.Hour
		return g, nil
	}); err != nil {
		t.Fatal(err)
	}
	h.press(h.envelope(), pAlice, actionBGApprove, id)
	if g := h.grant(t); g.Status != approvals.GrantRequested || g.Accessor != "" {
		t.Fatalf("a forged request was approved: %+v", g)
	}
	if h.said("D"+pDave, "vault unwrap") || h.said("DERIN", "vault unwrap") {
		t.Fatal("a token was delivered for a forged request")
	}
	events, _ := h.audit.Since(ctx, time.Time{})
	found := false
	for _, e := range events {
		found = found || e.Type == "forgery" && e.PlanID == id
	}
	if !found {
		t.Fatal("no forgery event")
	}
}
