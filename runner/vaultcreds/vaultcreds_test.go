package vaultcreds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

type fixture struct {
	dev   *devstack.Vault
	root  *vault.Client
	creds *Client
}

func setup(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	dev := stacktest.Vault(t)
	botToken, err := dev.ApplyDeploy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Apply(ctx, devstack.VaultSetup{KV: map[string]map[string]any{
		"staging/deploy": {"password": "kv-secret-value", "port": 5432},
		"prod/deploy":    {"password": "prod-secret-value"},
	}}); err != nil {
		t.Fatal(err)
	}
	root, err := dev.Client()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := New(Options{Address: dev.Addr, Login: TokenLogin(config.Secret(botToken)), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{dev: dev, root: root, creds: creds}
}

var stagingApply = runner.CredentialRequest{
	Role: "twokey-staging-apply", TTL: 2 * time.Minute, NumUses: 3, Purpose: "apply p-test",
	Secrets: []runner.SecretRef{{Path: "secret/data/staging/deploy", Env: map[string]string{"DB_PASSWORD": "password", "DB_PORT": "port"}}},
}

func TestMintReadsSecretsWithAChildToken(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cred, err := f.creds.Mint(ctx, stagingApply)
	if err != nil {
		t.Fatal(err)
	}
	env := cred.Env()
	if env["DB_PASSWORD"] != "kv-secret-value" || env["DB_PORT"] != "5432" || env["VAULT_TOKEN"] == "" {
		t.Fatalf("env = %v", keys(env))
	}
	look, err := f.root.Auth().Token().LookupAccessorWithContext(ctx, cred.Accessor)
	if err != nil {
		t.Fatal(err)
	}
	policies, _ := look.TokenPolicies()
	ttl, _ := look.TokenTTL()
	if !slices.Equal(policies, []string{"staging-apply"}) {
		t.Errorf("child token policies = %v, want only staging-apply", policies)
	}
	if ttl <= 0 || ttl > 2*time.Minute {
		t.Errorf("child token ttl = %v, want ≤ 2m", ttl)
	}
	if renewable, _ := look.TokenIsRenewable(); renewable {
		t.Error("child token is renewable")
	}
	if uses := look.Data["num_uses"]; uses == nil || uses.(interface{ String() string }).String() != "2" {
		t.Errorf("num_uses after one read = %v, want 2", uses)
	}
	// The child token reaches nothing outside its policy.
	child, _ := f.root.Clone()
	child.SetToken(env["VAULT_TOKEN"])
	if _, err := child.Logical().ReadWithContext(ctx, "secret/data/prod/deploy"); !isForbidden(err) {
		t.Errorf("child read prod secret: err = %v, want 403", err)
	}

	if err := f.creds.Revoke(ctx, cred); err != nil {
		t.Fatal(err)
	}
	if _, err := f.root.Auth().Token().LookupAccessorWithContext(ctx, cred.Accessor); err == nil {
		t.Fatal("token still exists after Revoke")
	}
}

func TestTheBotCannotReadSecrets(t *testing.T) {
	f := setup(t)
	bot, err := f.creds.authed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bot.Logical().Read("secret/data/staging/deploy"); !isForbidden(err) {
		t.Fatalf("bot token read a secret: err = %v", err)
	}
	if _, err := bot.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{"staging-apply"}}); !isForbidden(err) {
		t.Fatalf("bot token minted a token outside the roles: err = %v", err)
	}
}

func TestMintFailsClosed(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	tests := []struct {
		name string
		req  runner.CredentialRequest
	}{
		{"unknown role", runner.CredentialRequest{Role: "twokey-nope", TTL: time.Minute, NumUses: 1}},
		{"role outside the bot policy", runner.CredentialRequest{Role: "other", TTL: time.Minute, NumUses: 1}},
		{"missing field", runner.CredentialRequest{Role: "twokey-staging-apply", TTL: time.Minute, NumUses: 2,
			Secrets: []runner.SecretRef{{Path: "secret/data/staging/deploy", Env: map[string]string{"X": "nope"}}}}},
		{"secret outside the policy", runner.CredentialRequest{Role: "twokey-staging-apply", TTL: time.Minute, NumUses: 2,
			Secrets: []runner.SecretRef{{Path: "secret/data/prod/deploy", Env: map[string]string{"X": "password"}}}}},
	}
	for _, tt := range tests {
		before := countTokens(t, f.root)
		cred, err := f.creds.Mint(ctx, tt.req)
		if !errors.Is(err, runner.ErrCredentials) || cred != nil {
			t.Errorf("%s: err = %v, want ErrCredentials", tt.name, err)
		}
		if after := countTokens(t, f.root); after != before {
			t.Errorf("%s: %d tokens left behind", tt.name, after-before)
		}
	}

	if err := f.dev.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := f.creds.Mint(ctx, stagingApply)
	if !errors.Is(err, runner.ErrCredentials) {
		t.Fatalf("vault down: err = %v, want ErrCredentials", err)
	}
	t.Logf("vault down reported after %v", time.Since(start).Round(time.Millisecond))
}

func TestAppRoleLogin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.root.Logical().Write("auth/approle/role/twokey", map[string]any{
		"token_policies": []string{"twokey-bot"}, "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	rid, _ := f.root.Logical().Read("auth/approle/role/twokey/role-id")
	sid, _ := f.root.Logical().Write("auth/approle/role/twokey/secret-id", nil)
	creds, err := New(Options{Address: f.dev.Addr, Login: AppRoleLogin("approle",
		config.Secret(rid.Data["role_id"].(string)), config.Secret(sid.Data["secret_id"].(string)))})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := creds.Mint(ctx, stagingApply)
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Revoke(ctx, cred); err != nil {
		t.Fatal(err)
	}
}

func isForbidden(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

func countTokens(t *testing.T, root *vault.Client) int {
	t.Helper()
	s, err := root.Logical().List("auth/token/accessors")
	if err != nil || s == nil {
		t.Fatalf("list accessors: %v", err)
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

func keys(m map[string]string) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}

// A secret that is not KV version 2 (here KV version 1; dynamic secrets such
// as aws/creds/… answer the same shape) maps its top-level fields.
func TestMintReadsNonKV2Secrets(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.root.Sys().MountWithContext(ctx, "legacy", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.root.Logical().WriteWithContext(ctx, "legacy/deploy", map[string]any{"api_key": "v1-value"}); err != nil {
		t.Fatal(err)
	}
	if err := f.dev.Apply(ctx, devstack.VaultSetup{
		Policies:   map[string]string{"legacy-read": `path "legacy/deploy" { capabilities = ["read"] }`},
		TokenRoles: map[string]devstack.TokenRole{"twokey-legacy": {AllowedPolicies: []string{"legacy-read"}, Orphan: true}},
	}); err != nil {
		t.Fatal(err)
	}
	cred, err := f.creds.Mint(ctx, runner.CredentialRequest{Role: "twokey-legacy", TTL: time.Minute, NumUses: 2,
		Secrets: []runner.SecretRef{{Path: "legacy/deploy", Env: map[string]string{"API_KEY": "api_key"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.creds.Revoke(ctx, cred)
	if got := cred.Env()["API_KEY"]; got != "v1-value" {
		t.Fatalf("API_KEY = %q", got)
	}
}

// A break-glass token comes wrapped: the wrapping token unwraps once, to a
// token with exactly the break-glass policies and a TTL no longer than
// asked; a second unwrap fails, and the lookup says so.
func TestMintWrapped(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	w, err := f.creds.MintWrapped(ctx, runner.WrappedRequest{Role: "twokey-prod-breakglass", Policies: []string{"prod-breakglass"},
		TTL: 10 * time.Minute, WrapTTL: time.Minute, Purpose: "breakglass bg-test"})
	if err != nil {
		t.Fatal(err)
	}
	if w.WrapToken == "" || w.Accessor == "" || w.WrapAccessor == "" || w.CreationPath != "auth/token/create/twokey-prod-breakglass" {
		t.Fatalf("wrapped = %+v (path %q)", w, w.CreationPath)
	}
	if s := fmt.Sprintf("%v %+v %#v", w, w, w); strings.Contains(s, w.WrapToken) {
		t.Fatalf("a wrapped token prints its wrapping token: %s", s)
	}
	checker, err := NewWrapChecker(f.dev.Addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	info, err := checker.LookupWrapping(ctx, w.WrapToken)
	if err != nil || info.CreationPath != w.CreationPath || info.TTL != time.Minute {
		t.Fatalf("lookup before unwrap: %v %+v", err, info)
	}
	for _, acc := range []string{w.Accessor, w.WrapAccessor} {
		if alive, err := f.creds.Alive(ctx, acc); err != nil || !alive {
			t.Fatalf("alive(%s) = %v %v", acc, alive, err)
		}
	}

	// The requester unwraps it, with no token of their own.
	anon, _ := f.root.Clone()
	anon.ClearToken()
	sec, err := anon.Logical().UnwrapWithContext(ctx, w.WrapToken)
	if err != nil || sec == nil || sec.Auth == nil {
		t.Fatalf("unwrap: %v", err)
	}
	look, err := f.root.Auth().Token().LookupWithContext(ctx, sec.Auth.ClientToken)
	if err != nil {
		t.Fatal(err)
	}
	policies, _ := look.TokenPolicies()
	ttl, _ := look.TokenTTL()
	renewable, _ := look.TokenIsRenewable()
	accessor, _ := look.TokenAccessor()
	if !slices.Equal(policies, []string{"prod-breakglass"}) || ttl <= 0 || ttl > 10*time.Minute || renewable || accessor != w.Accessor {
		t.Fatalf("unwrapped token: policies %v ttl %v renewable %v accessor %s", policies, ttl, renewable, accessor)
	}
	if _, err := anon.Logical().UnwrapWithContext(ctx, w.WrapToken); err == nil {
		t.Fatal("a wrapping token unwrapped twice")
	}
	if _, err := checker.LookupWrapping(ctx, w.WrapToken); !errors.Is(err, runner.ErrWrapping) {
		t.Fatalf("lookup after unwrap: %v", err)
	}
	if alive, err := f.creds.Alive(ctx, w.WrapAccessor); err != nil || alive {
		t.Fatalf("the wrapping token is gone after unwrap: alive %v, %v", alive, err)
	}

	// Revoke ends the token at once.
	if err := f.creds.RevokeAccessor(ctx, w.Accessor); err != nil {
		t.Fatal(err)
	}
	if alive, err := f.creds.Alive(ctx, w.Accessor); err != nil || alive {
		t.Fatalf("alive after revoke = %v %v", alive, err)
	}
	if _, err := f.root.Auth().Token().LookupWithContext(ctx, sec.Auth.ClientToken); err == nil {
		t.Fatal("the revoked token still looks up")
	}

	// More than the role allows is refused.
	if _, err := f.creds.MintWrapped(ctx, runner.WrappedRequest{Role: "twokey-prod-breakglass", Policies: []string{"prod-apply"},
		TTL: time.Minute, WrapTTL: time.Minute}); !errors.Is(err, runner.ErrCredentials) {
		t.Fatalf("policies outside the role: %v", err)
	}
}

// appRole enables AppRole (once) and makes a role with the bot's policy and
// the given token settings; it returns the role ID.
func appRole(t *testing.T, f fixture, name string, settings map[string]any) string {
	t.Helper()
	ctx := context.Background()
	auths, err := f.root.Sys().ListAuthWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := f.root.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatal(err)
		}
	}
	body := map[string]any{"token_policies": []string{"twokey-bot"}}
	for k, v := range settings {
		body[k] = v
	}
	if _, err := f.root.Logical().Write("auth/approle/role/"+name, body); err != nil {
		t.Fatal(err)
	}
	rid, err := f.root.Logical().Read("auth/approle/role/" + name + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	return rid.Data["role_id"].(string)
}

// A response-wrapped secret ID is unwrapped at login, and opens once: a
// second process given the same wrapping token (someone who intercepted
// it, or a replay) cannot log in with it.
func TestAppRoleWrappedSecretID(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	roleID := appRole(t, f, "twokey", map[string]any{"token_period": "1h"})
	wrapper, _ := f.root.Clone()
	wrapper.SetToken(f.root.Token())
	wrapper.SetWrappingLookupFunc(func(string, string) string { return "2m" })
	sid, err := wrapper.Logical().Write("auth/approle/role/twokey/secret-id", nil)
	if err != nil || sid == nil || sid.WrapInfo == nil {
		t.Fatalf("wrapped secret-id: %v %+v", err, sid)
	}
	wrapped := config.Secret(sid.WrapInfo.Token)
	login := func() *Client {
		c, err := New(Options{Address: f.dev.Addr, Login: AppRoleLogin("approle", config.Secret(roleID), wrapped, WrappedSecretID())})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := login()
	cred, err := first.Mint(ctx, stagingApply)
	if err != nil {
		t.Fatalf("mint with a wrapped secret ID: %v", err)
	}
	if err := first.Revoke(ctx, cred); err != nil {
		t.Fatal(err)
	}
	if _, err := login().Mint(ctx, stagingApply); !errors.Is(err, runner.ErrCredentials) || !strings.Contains(err.Error(), "unwrap") {
		t.Fatalf("second login with the same wrapping token: err = %v, want an unwrap failure", err)
	}
	// Without the option, the wrapping token is not a secret ID.
	plain, err := New(Options{Address: f.dev.Addr, Login: AppRoleLogin("approle", config.Secret(roleID), wrapped)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Mint(ctx, stagingApply); !errors.Is(err, runner.ErrCredentials) {
		t.Fatalf("wrapping token used as a plain secret ID: err = %v", err)
	}
}

// The login is kept alive by vault/api's LifetimeWatcher: a renewable
// login outlives its TTL without logging in again, and once it reaches
// its max TTL the next request logs in afresh.
func TestLoginKeptAlive(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	appRole(t, f, "unused", nil) // enable AppRole before the parallel subtests
	for _, tt := range []struct {
		name       string
		settings   map[string]any
		wantLogins int
	}{
		{"renewed", map[string]any{"token_ttl": "3s", "token_max_ttl": "1h"}, 1},
		{"max ttl reached", map[string]any{"token_ttl": "3s", "token_max_ttl": "4s"}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tt.name, " ", "-")
			roleID := appRole(t, f, name, tt.settings)
			sid, err := f.root.Logical().Write("auth/approle/role/"+name+"/secret-id", nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := New(Options{Address: f.dev.Addr, Login: AppRoleLogin("approle", config.Secret(roleID), config.Secret(sid.Data["secret_id"].(string)))})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.authed(ctx); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			first := c.token
			c.mu.Unlock()
			time.Sleep(6 * time.Second) // twice the token's TTL
			cred, err := c.Mint(ctx, stagingApply)
			if err != nil {
				t.Fatalf("mint after the login's TTL: %v", err)
			}
			_ = c.Revoke(ctx, cred)
			c.mu.Lock()
			logins, same := c.logins, c.token == first
			c.mu.Unlock()
			if logins != tt.wantLogins || same != (tt.wantLogins == 1) {
				t.Errorf("logins = %d (same token: %v), want %d", logins, same, tt.wantLogins)
			}
		})
	}
}

// A role whose token_explicit_max_ttl is below the request gives a shorter
// token; Mint reports what Vault granted, not what was asked.
func TestMintReportsGrantedTTL(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.dev.Apply(ctx, devstack.VaultSetup{TokenRoles: map[string]devstack.TokenRole{
		"twokey-staging-capped": {AllowedPolicies: []string{"staging-apply"}, Orphan: true, ExplicitMaxTTL: 45 * time.Second}}}); err != nil {
		t.Fatal(err)
	}
	req := stagingApply
	req.Role = "twokey-staging-capped"
	cred, err := f.creds.Mint(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer f.creds.Revoke(ctx, cred)
	if cred.Granted != 45*time.Second || time.Until(cred.Expires) > 45*time.Second {
		t.Fatalf("granted %v, expires in %v; want 45s", cred.Granted, time.Until(cred.Expires))
	}
	full, err := f.creds.Mint(ctx, stagingApply)
	if err != nil {
		t.Fatal(err)
	}
	defer f.creds.Revoke(ctx, full)
	if full.Granted != 2*time.Minute {
		t.Fatalf("granted %v, want 2m", full.Granted)
	}
}
