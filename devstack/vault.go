package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/deploy"
)

// VaultOptions configure a Vault dev server.
type VaultOptions struct {
	Dir  string // HOME for the server; required
	Port int    // 0 picks a free port
	Log  io.Writer
}

// Vault is a running `vault server -dev` on 127.0.0.1: in memory, unsealed,
// KV version 2 mounted at secret/, root token RootToken.
type Vault struct {
	Addr      string // http://127.0.0.1:port
	RootToken string
	proc      *process
}

// StartVault starts a dev server and waits until it reports healthy.
func StartVault(ctx context.Context, o VaultOptions) (*Vault, error) {
	bin, err := Tool("vault")
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, fmt.Errorf("vault: Dir is required")
	}
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	home := filepath.Join(o.Dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	v := &Vault{Addr: fmt.Sprintf("http://127.0.0.1:%d", o.Port), RootToken: "root"}
	args := []string{"server", "-dev", "-dev-root-token-id=" + v.RootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", o.Port), "-dev-no-store-token"}
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "VAULT_LOG_LEVEL=warn"}
	if v.proc, err = start("vault", bin, args, env, o.Dir, o.Log); err != nil {
		return nil, err
	}
	if err := v.proc.waitReady(ctx, 30*time.Second, v.healthy); err != nil {
		_ = v.Stop()
		return nil, err
	}
	return v, nil
}

func (v *Vault) healthy(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.Addr+"/v1/sys/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s", resp.Status)
	}
	return nil
}

// Stop ends the server; everything in it is gone.
func (v *Vault) Stop() error { return v.proc.stop(5 * time.Second) }

// Pid is the server's process ID.
func (v *Vault) Pid() int { return v.proc.Pid() }

// Client returns an API client with the root token.
func (v *Vault) Client() (*vault.Client, error) {
	cfg := vault.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(v.RootToken)
	return c, nil
}

// TokenRole is a token role twokey mints child tokens from.
type TokenRole struct {
	AllowedPolicies []string
	// ExplicitMaxTTL caps every token of the role, renewals included.
	ExplicitMaxTTL time.Duration
	Orphan         bool
	Renewable      bool
}

// VaultSetup is what a test or the demo puts into a fresh dev server.
type VaultSetup struct {
	Policies   map[string]string         // name → HCL
	TokenRoles map[string]TokenRole      // name → role
	RoleFields map[string]map[string]any // name → auth/token/roles fields, as written
	KV         map[string]map[string]any // path under secret/ → data (KV v2)
}

// Apply writes policies, token roles and KV secrets.
func (v *Vault) Apply(ctx context.Context, s VaultSetup) error {
	c, err := v.Client()
	if err != nil {
		return err
	}
	for name, hcl := range s.Policies {
		if err := c.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
			return fmt.Errorf("policy %s: %w", name, err)
		}
	}
	for name, r := range s.TokenRoles {
		data := map[string]any{
			"allowed_policies":        r.AllowedPolicies,
			"orphan":                  r.Orphan,
			"renewable":               r.Renewable,
			"token_no_default_policy": true,
		}
		if r.ExplicitMaxTTL > 0 {
			data["token_explicit_max_ttl"] = r.ExplicitMaxTTL.String()
		}
		if _, err := c.Logical().WriteWithContext(ctx, "auth/token/roles/"+name, data); err != nil {
			return fmt.Errorf("token role %s: %w", name, err)
		}
	}
	for name, data := range s.RoleFields {
		if _, err := c.Logical().WriteWithContext(ctx, "auth/token/roles/"+name, data); err != nil {
			return fmt.Errorf("token role %s: %w", name, err)
		}
	}
	for path, data := range s.KV {
		if _, err := c.KVv2("secret").Put(ctx, path, data); err != nil {
			return fmt.Errorf("kv %s: %w", path, err)
		}
	}
	return nil
}

// Token creates a token with exactly the given policies, as the bot's own
// login would be in production.
func (v *Vault) Token(ctx context.Context, policies []string, ttl time.Duration) (string, error) {
	c, err := v.Client()
	if err != nil {
		return "", err
	}
	sec, err := c.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{
		Policies: policies, TTL: ttl.String(), NoDefaultPolicy: false,
	})
	if err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, nil
}

// ApplyDeploy writes the policies in deploy/vault/*.hcl and the token roles
// in deploy/vault/token-roles.json (the file deploy/vault/roles.tf reads),
// as an operator following the README would, and returns a token for
// twokey with only the twokey-bot policy.
func (v *Vault) ApplyDeploy(ctx context.Context) (botToken string, err error) {
	files, err := fs.Glob(deploy.Files, "vault/*.hcl")
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no policies in deploy/vault: %v", err)
	}
	s := VaultSetup{Policies: map[string]string{}}
	roles, err := fs.ReadFile(deploy.Files, "vault/token-roles.json")
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(roles, &s.RoleFields); err != nil {
		return "", fmt.Errorf("deploy/vault/token-roles.json: %w", err)
	}
	for _, f := range files {
		b, err := fs.ReadFile(deploy.Files, f)
		if err != nil {
			return "", err
		}
		s.Policies[strings.TrimSuffix(path.Base(f), ".hcl")] = string(b)
	}
	if err := v.Apply(ctx, s); err != nil {
		return "", err
	}
	return v.Token(ctx, []string{"twokey-bot"}, 24*time.Hour)
}

// AppRole enables the approle auth method (once) and creates a role with
// policies, returning its role ID and a secret ID, as an operator would
// hand them to a twokey process.
func (v *Vault) AppRole(ctx context.Context, name string, policies ...string) (roleID, secretID string, err error) {
	c, err := v.Client()
	if err != nil {
		return "", "", err
	}
	auths, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return "", "", err
	}
	if _, ok := auths["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
			return "", "", err
		}
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+name, map[string]any{
		"token_policies": policies, "token_ttl": "1h",
	}); err != nil {
		return "", "", err
	}
	rid, err := c.Logical().ReadWithContext(ctx, "auth/approle/role/"+name+"/role-id")
	if err != nil {
		return "", "", err
	}
	sid, err := c.Logical().WriteWithContext(ctx, "auth/approle/role/"+name+"/secret-id", nil)
	if err != nil {
		return "", "", err
	}
	return rid.Data["role_id"].(string), sid.Data["secret_id"].(string), nil
}
