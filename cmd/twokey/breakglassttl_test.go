package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/deploy"
)

// The break-glass token is boxed in time and in what it leaves behind: its
// explicit max TTL is the requested duration (under max_ttl), renewing it
// (by its holder, or by Vault's root) cannot stretch it, and revoking the
// grant revokes the leases of the secrets read with it. The dynamic secret
// is a PKI certificate issued with a lease (generate_lease), which Vault's
// dev server can issue without any outside system.
func TestBreakGlassMaxTTLAndLeases(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	root, err := s.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	// A dynamic secret prod's break-glass policy may read.
	if err := root.Sys().MountWithContext(ctx, "pki", &vault.MountInput{Type: "pki"}); err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string]map[string]any{
		"pki/root/generate/internal": {"common_name": "twokey.test", "ttl": "24h"},
		"pki/roles/bg":               {"allow_any_name": true, "generate_lease": true, "ttl": "24h", "max_ttl": "24h"},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, path, data); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	policy, err := deploy.Files.ReadFile("vault/prod-breakglass.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "prod-breakglass",
		string(policy)+"\npath \"pki/issue/bg\" {\n  capabilities = [\"update\"]\n}\n"); err != nil {
		t.Fatal(err)
	}
	s.startBot("--sweep-interval", "200ms")

	// prod is self-service: the token is delivered straight away.
	s.slash(erin, `breakglass prod 10m "certificate rotation stuck"`)
	dm := s.dmTo(erin, "vault unwrap")
	token, err := s.unwrap(wrapRE.FindStringSubmatch(dm.Content())[1])
	if err != nil {
		t.Fatal(err)
	}
	id := grantID(t, s.announcement("", "self-service"))

	look := mustLookup(t, s, token)
	explicit, err := look.Data["explicit_max_ttl"].(json.Number).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if explicit != int64((10 * time.Minute).Seconds()) {
		t.Fatalf("explicit_max_ttl %ds, want the requested 600s (not max_ttl's 1h)", explicit)
	}
	if renewable, _ := look.Data["renewable"].(bool); renewable {
		t.Error("the break-glass token is renewable")
	}

	// Asking for more: the holder renews it, then root renews it by accessor.
	holder, err := s.vault.Client()
	if err != nil {
		t.Fatal(err)
	}
	holder.SetToken(token)
	if _, err := holder.Auth().Token().RenewSelfWithContext(ctx, int((2 * time.Hour).Seconds())); err == nil {
		t.Error("the holder renewed the break-glass token")
	}
	accessor, _ := look.Data["accessor"].(string)
	if _, err := root.Logical().WriteWithContext(ctx, "auth/token/renew-accessor", map[string]any{"accessor": accessor, "increment": "2h"}); err == nil {
		t.Error("root renewed the break-glass token")
	}
	if ttl, err := mustLookup(t, s, token).TokenTTL(); err != nil || ttl <= 0 || ttl > 10*time.Minute {
		t.Fatalf("after asking for more, the token's TTL is %v (%v), want at most 10m", ttl, err)
	}

	// A secret with a lease, read with the token.
	cert, err := holder.Logical().WriteWithContext(ctx, "pki/issue/bg", map[string]any{"common_name": "db.prod.example", "ttl": "1h"})
	if err != nil {
		t.Fatalf("issue a certificate with the break-glass token: %v", err)
	}
	if cert.LeaseID == "" {
		t.Fatal("the certificate has no lease")
	}
	// Vault gives the lease its own TTL (an hour here); what ends it early is
	// the token's revocation, below.
	leaseAlive := func() bool {
		_, err := root.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": cert.LeaseID})
		return err == nil
	}
	if !leaseAlive() {
		t.Fatal("the certificate's lease is not in Vault")
	}

	s.slash(erin, "breakglass revoke "+id)
	s.ephemeral(erin, "Vault confirms the token is gone")
	if _, err := s.lookup(token); err == nil {
		t.Fatal("the token still exists after revoke")
	}
	for deadline := time.Now().Add(10 * time.Second); leaseAlive(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the lease %s outlived the revoked grant", cert.LeaseID)
		}
	}
	if !strings.Contains(s.announcement(id, "revoked").Content(), id) {
		t.Fatal("the revocation was not announced")
	}
}
