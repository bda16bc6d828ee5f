package runner_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/vaultcreds"
)

// A token role whose token_explicit_max_ttl is below the requested TTL
// silently shortens the apply's token. Against a real Vault: the runner
// reads the granted TTL back, refuses to start an apply the token would not
// outlive, says which role caps it, revokes the token, and the audit
// records the TTL Vault granted.
func TestCappedTokenRoleStopsTheApply(t *testing.T) {
	ctx := context.Background()
	dev := stacktest.Vault(t)
	botToken, err := dev.ApplyDeploy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Apply(ctx, devstack.VaultSetup{
		TokenRoles: map[string]devstack.TokenRole{"twokey-staging-capped": {AllowedPolicies: []string{"staging-apply"}, Orphan: true, ExplicitMaxTTL: 30 * time.Second}},
		KV:         map[string]map[string]any{"staging/deploy": {"password": "kv-secret-value"}},
	}); err != nil {
		t.Fatal(err)
	}
	creds, err := vaultcreds.New(vaultcreds.Options{Address: dev.Addr, Login: vaultcreds.TokenLogin(config.Secret(botToken)), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { creds.Close() })

	f := setup(t, 30*time.Second)
	rec := &recorder{}
	r, err := f.runner(t, func(o *runner.Options) { o.Creds, o.Audit = creds, rec })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	lease, res := f.plan(t, "p1", sha1)

	f.target.ApplyCreds.Role, f.target.ApplyCreds.TTL = "twokey-staging-capped", 2*time.Minute
	f.target.ApplyTimeout = time.Minute
	_, err = f.r.Apply(ctx, runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target})
	var te *runner.TTLError
	if !errors.As(err, &te) || !errors.Is(err, runner.ErrCredentials) || !errors.Is(err, runner.ErrTTLCapped) {
		t.Fatalf("err = %v", err)
	}
	if te.Granted != 30*time.Second || te.Role != "twokey-staging-capped" || !strings.Contains(err.Error(), "twokey-staging-capped") {
		t.Errorf("TTLError = %+v: %v", te, err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "env.txt")); !os.IsNotExist(err) {
		t.Error("terraform ran with a token that would die mid-apply")
	}
	var minted, revoked audit.Event
	for _, e := range rec.events {
		switch e.Type {
		case audit.CredentialMinted:
			minted = e
		case audit.CredentialRevoked:
			revoked = e
		}
	}
	if minted.Detail["granted_ttl"] != "30s" || minted.Detail["ttl"] != "2m0s" {
		t.Errorf("minted record = %v", minted.Detail)
	}
	if revoked.Detail["accessor"] == "" || revoked.Detail["accessor"] != minted.Detail["accessor"] || revoked.Detail["error"] != "" {
		t.Errorf("revoked record = %v", revoked.Detail)
	}
	root, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Auth().Token().LookupAccessorWithContext(ctx, minted.Detail["accessor"]); err == nil {
		t.Error("the capped token was left alive")
	}

	// With a role that grants what is asked, the same apply runs, and the
	// audit records the granted TTL.
	f.target.ApplyCreds.Role, f.target.ApplyCreds.TTL = "twokey-staging-apply", 2*time.Minute
	if _, err := f.r.Apply(ctx, runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	var last audit.Event
	for _, e := range rec.events {
		if e.Type == audit.CredentialMinted {
			last = e
		}
	}
	if last.Detail["granted_ttl"] != "2m0s" {
		t.Errorf("granted_ttl = %q", last.Detail["granted_ttl"])
	}
}
