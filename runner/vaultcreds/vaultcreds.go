// Package vaultcreds is runner.Credentials on Vault. The bot's own Vault
// login needs only two rights: create tokens on the environments' token
// roles, and revoke tokens by accessor. Each run gets a non-renewable child
// token with a TTL and a use limit; the secrets are read with that child
// token, never with the bot's.
package vaultcreds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Login authenticates the bot to Vault and returns its token and how long
// the token lives (0 when unknown or unlimited).
type Login func(ctx context.Context, c *vault.Client) (token string, ttl time.Duration, err error)

// TokenLogin uses a fixed token.
func TokenLogin(token config.Secret) Login {
	return func(context.Context, *vault.Client) (string, time.Duration, error) {
		if token == "" {
			return "", 0, errors.New("no Vault token")
		}
		return token.Reveal(), 0, nil
	}
}

// AppRoleLogin logs in with an AppRole role ID and secret ID.
func AppRoleLogin(mount string, roleID, secretID config.Secret) Login {
	return func(ctx context.Context, c *vault.Client) (string, time.Duration, error) {
		sec, err := c.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(mount, "/")+"/login", map[string]any{
			"role_id": roleID.Reveal(), "secret_id": secretID.Reveal(),
		})
		if err != nil {
			return "", 0, fmt.Errorf("approle login: %w", err)
		}
		if sec == nil || sec.Auth == nil {
			return "", 0, errors.New("approle login returned no token")
		}
		return sec.Auth.ClientToken, time.Duration(sec.Auth.LeaseDuration) * time.Second, nil
	}
}

// Options configure a Client.
type Options struct {
	Address string
	Login   Login
	// Timeout bounds each Vault request, so an unreachable Vault is reported
	// within seconds. Default 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Client is a runner.Credentials.
type Client struct {
	o   Options
	api *vault.Client

	mu      sync.Mutex
	token   string
	expires time.Time // zero: does not expire (or unknown)
}

var _ runner.Credentials = (*Client)(nil)

// New returns a client; it logs in on first use, so a Vault that is down
// when the bot starts only fails applies, with a clear message.
func New(o Options) (*Client, error) {
	if o.Address == "" || o.Login == nil {
		return nil, errors.New("vaultcreds: Address and Login are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address = o.Address
	cfg.Timeout = o.Timeout
	cfg.MaxRetries = 1
	api, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	api.ClearToken() // never a token picked up from the process environment
	return &Client{o: o, api: api}, nil
}

// authed returns a client carrying the bot's token, logging in when there
// is none or it is about to expire.
func (c *Client) authed(ctx context.Context) (*vault.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || (!c.expires.IsZero() && time.Until(c.expires) < time.Minute) {
		anon, err := c.api.Clone()
		if err != nil {
			return nil, err
		}
		anon.ClearToken()
		token, ttl, err := c.o.Login(ctx, anon)
		if err != nil {
			return nil, err
		}
		c.token, c.expires = token, time.Time{}
		if ttl > 0 {
			c.expires = time.Now().Add(ttl)
		}
	}
	bot, err := c.api.Clone()
	if err != nil {
		return nil, err
	}
	bot.SetToken(c.token)
	return bot, nil
}

// forget drops the bot's token after Vault refused it, so the next call
// logs in again.
func (c *Client) forget(err error) {
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		c.mu.Lock()
		c.token = ""
		c.mu.Unlock()
	}
}

// Mint creates a child token from req.Role and reads req.Secrets with it.
func (c *Client) Mint(ctx context.Context, req runner.CredentialRequest) (*runner.Credential, error) {
	bot, err := c.authed(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: vault login: %w", runner.ErrCredentials, err)
	}
	renewable := false
	sec, err := bot.Auth().Token().CreateWithRoleWithContext(ctx, &vault.TokenCreateRequest{
		TTL:            req.TTL.String(),
		ExplicitMaxTTL: req.TTL.String(),
		NumUses:        req.NumUses,
		Renewable:      &renewable,
		DisplayName:    "twokey",
		Metadata:       map[string]string{"purpose": req.Purpose},
	}, req.Role)
	if err != nil {
		c.forget(err)
		return nil, fmt.Errorf("%w: create token on role %s: %w", runner.ErrCredentials, req.Role, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%w: role %s returned no token", runner.ErrCredentials, req.Role)
	}
	token, accessor := sec.Auth.ClientToken, sec.Auth.Accessor
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	env, err := c.read(ctx, token, req.Secrets)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
		defer cancel()
		if rerr := c.revokeAccessor(rctx, accessor); rerr != nil {
			c.o.Logger.Error("revoke token after failed secret read; it expires by its TTL", "accessor", accessor, "err", rerr)
		}
		return nil, fmt.Errorf("%w: %w", runner.ErrCredentials, err)
	}
	env["VAULT_TOKEN"] = token
	return runner.NewCredential(accessor, time.Now().Add(ttl), env), nil
}

// read reads each secret with the child token and maps its fields.
func (c *Client) read(ctx context.Context, token string, refs []runner.SecretRef) (map[string]string, error) {
	child, err := c.api.Clone()
	if err != nil {
		return nil, err
	}
	child.SetToken(token)
	env := map[string]string{}
	for _, ref := range refs {
		sec, err := child.Logical().ReadWithContext(ctx, ref.Path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", ref.Path, err)
		}
		if sec == nil || sec.Data == nil {
			return nil, fmt.Errorf("read %s: no secret there", ref.Path)
		}
		data := sec.Data
		// KV version 2 nests the fields under data, next to metadata.
		if inner, ok := data["data"].(map[string]any); ok && data["metadata"] != nil {
			data = inner
		}
		for envName, field := range ref.Env {
			v, ok := data[field]
			if !ok || v == nil {
				return nil, fmt.Errorf("read %s: no field %q", ref.Path, field)
			}
			env[envName] = fmt.Sprint(v)
		}
	}
	return env, nil
}

// Revoke revokes the child token, and with it every lease it created.
func (c *Client) Revoke(ctx context.Context, cred *runner.Credential) error {
	if cred == nil {
		return nil
	}
	return c.revokeAccessor(ctx, cred.Accessor)
}

func (c *Client) revokeAccessor(ctx context.Context, accessor string) error {
	bot, err := c.authed(ctx)
	if err != nil {
		return err
	}
	if err := bot.Auth().Token().RevokeAccessorWithContext(ctx, accessor); err != nil {
		c.forget(err)
		return fmt.Errorf("revoke %s: %w", accessor, err)
	}
	return nil
}

var _ runner.EmergencyCredentials = (*Client)(nil)

// MintWrapped creates a token from req.Role with exactly req.Policies,
// response-wrapped: Vault keeps the token in a cubbyhole and returns a
// single-use wrapping token. twokey never sees the token itself.
func (c *Client) MintWrapped(ctx context.Context, req runner.WrappedRequest) (runner.Wrapped, error) {
	bot, err := c.authed(ctx)
	if err != nil {
		return runner.Wrapped{}, fmt.Errorf("%w: vault login: %w", runner.ErrCredentials, err)
	}
	wrapTTL := req.WrapTTL.String()
	bot.SetWrappingLookupFunc(func(string, string) string { return wrapTTL })
	renewable := false
	sec, err := bot.Auth().Token().CreateWithRoleWithContext(ctx, &vault.TokenCreateRequest{
		Policies:        req.Policies,
		TTL:             req.TTL.String(),
		ExplicitMaxTTL:  req.TTL.String(),
		Renewable:       &renewable,
		NoDefaultPolicy: true,
		DisplayName:     "twokey-breakglass",
		Metadata:        map[string]string{"purpose": req.Purpose},
	}, req.Role)
	if err != nil {
		c.forget(err)
		return runner.Wrapped{}, fmt.Errorf("%w: create token on role %s: %w", runner.ErrCredentials, req.Role, err)
	}
	if sec == nil || sec.WrapInfo == nil || sec.WrapInfo.Token == "" || sec.WrapInfo.WrappedAccessor == "" {
		return runner.Wrapped{}, fmt.Errorf("%w: role %s returned no wrapped token", runner.ErrCredentials, req.Role)
	}
	wi := sec.WrapInfo
	created := wi.CreationTime
	if created.IsZero() {
		created = time.Now()
	}
	return runner.Wrapped{
		WrapToken: wi.Token, WrapAccessor: wi.Accessor, Accessor: wi.WrappedAccessor, CreationPath: wi.CreationPath,
		Expires: created.Add(req.TTL), WrapExpires: created.Add(time.Duration(wi.TTL) * time.Second),
	}, nil
}

// Alive reports whether the token with accessor exists.
func (c *Client) Alive(ctx context.Context, accessor string) (bool, error) {
	bot, err := c.authed(ctx)
	if err != nil {
		return false, fmt.Errorf("%w: vault login: %w", runner.ErrCredentials, err)
	}
	_, err = bot.Auth().Token().LookupAccessorWithContext(ctx, accessor)
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "invalid accessor") {
		return false, nil
	}
	if err != nil {
		c.forget(err)
		return false, fmt.Errorf("%w: look up %s: %w", runner.ErrCredentials, accessor, err)
	}
	return true, nil
}

// RevokeAccessor revokes a token by its accessor, and its leases with it.
func (c *Client) RevokeAccessor(ctx context.Context, accessor string) error {
	return c.revokeAccessor(ctx, accessor)
}

// WrapChecker looks up wrapping tokens. sys/wrapping/lookup needs no login,
// so `twokey serve` can check a token it is about to deliver without
// holding any Vault credential.
type WrapChecker struct{ api *vault.Client }

var _ runner.WrapChecker = (*WrapChecker)(nil)

// NewWrapChecker returns a WrapChecker for the Vault at address.
func NewWrapChecker(address string, timeout time.Duration) (*WrapChecker, error) {
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address, cfg.Timeout, cfg.MaxRetries = address, timeout, 1
	api, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	api.ClearToken()
	return &WrapChecker{api: api}, nil
}

// LookupWrapping returns what Vault says about a wrapping token; a token
// that was unwrapped (or never existed) is runner.ErrWrapping.
func (w *WrapChecker) LookupWrapping(ctx context.Context, wrapToken string) (runner.WrapInfo, error) {
	sec, err := w.api.Logical().WriteWithContext(ctx, "sys/wrapping/lookup", map[string]any{"token": wrapToken})
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
		return runner.WrapInfo{}, fmt.Errorf("%w: %s", runner.ErrWrapping, strings.Join(re.Errors, "; "))
	}
	if err != nil {
		return runner.WrapInfo{}, fmt.Errorf("%w: look up the wrapping token: %w", runner.ErrCredentials, err)
	}
	if sec == nil || sec.Data == nil {
		return runner.WrapInfo{}, fmt.Errorf("%w: empty lookup", runner.ErrWrapping)
	}
	info := runner.WrapInfo{}
	info.CreationPath, _ = sec.Data["creation_path"].(string)
	if s, ok := sec.Data["creation_time"].(string); ok {
		info.CreationTime, _ = time.Parse(time.RFC3339Nano, s)
	}
	if n, ok := sec.Data["creation_ttl"].(json.Number); ok {
		secs, _ := n.Int64()
		info.TTL = time.Duration(secs) * time.Second
	}
	return info, nil
}
