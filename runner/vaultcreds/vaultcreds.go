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
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/twokey/twokey/config/secret"
	"github.com/twokey/twokey/runner"
)

// Login is how the bot authenticates to Vault: one of vault/api's auth
// methods. The token it returns is kept alive with the API's
// LifetimeWatcher while it is renewable; when the watcher gives up (the
// token reached its max TTL, or renewing failed), the next request logs in
// again.
type Login = vault.AuthMethod

// TokenLogin uses a fixed token. It is never renewed, and a refused token
// is not replaced: give the bot a periodic token and renew it elsewhere, or
// use AppRole or Kubernetes auth.
func TokenLogin(token secret.Secret) Login { return tokenLogin{token} }

type tokenLogin struct{ token secret.Secret }

func (l tokenLogin) Login(context.Context, *vault.Client) (*vault.Secret, error) {
	if l.token == "" {
		return nil, errors.New("no Vault token")
	}
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: l.token.Reveal()}}, nil
}

// AppRoleOption changes how AppRoleLogin logs in.
type AppRoleOption func(*appRoleOptions)

type appRoleOptions struct{ wrapped bool }

// WrappedSecretID says the secret ID is a response-wrapping token (from
// `vault write -wrap-ttl=… -f auth/approle/role/R/secret-id`): it is
// unwrapped at login. A wrapping token opens once, so a secret ID that
// someone else intercepted and used makes the bot's login fail loudly
// instead of working for both. One login per wrapped secret ID: give the
// role a token_period so the LifetimeWatcher can renew the login for as
// long as the process runs.
func WrappedSecretID() AppRoleOption { return func(o *appRoleOptions) { o.wrapped = true } }

// AppRoleLogin logs in with an AppRole role ID and secret ID
// (vault/api/auth/approle).
func AppRoleLogin(mount string, roleID, secretID secret.Secret, opts ...AppRoleOption) Login {
	var o appRoleOptions
	for _, opt := range opts {
		opt(&o)
	}
	aopts := []approle.LoginOption{approle.WithMountPath(strings.Trim(mount, "/"))}
	if o.wrapped {
		aopts = append(aopts, approle.WithWrappingToken())
	}
	a, err := approle.NewAppRoleAuth(roleID.Reveal(), &approle.SecretID{FromString: secretID.Reveal()}, aopts...)
	if err != nil {
		return failedLogin{fmt.Errorf("approle: %w", err)}
	}
	return a
}

// KubernetesLogin logs in with the pod's service account token
// (vault/api/auth/kubernetes). The token file is read at every login, so a
// projected token that the kubelet rotates is picked up. tokenPath ""
// means the standard /var/run/secrets/kubernetes.io/serviceaccount/token.
func KubernetesLogin(mount, role, tokenPath string) Login {
	kopts := []kubernetes.LoginOption{kubernetes.WithMountPath(strings.Trim(mount, "/"))}
	if tokenPath != "" {
		kopts = append(kopts, kubernetes.WithServiceAccountTokenPath(tokenPath))
	}
	k, err := kubernetes.NewKubernetesAuth(role, kopts...)
	if err != nil {
		return failedLogin{fmt.Errorf("kubernetes auth: %w", err)}
	}
	return k
}

type failedLogin struct{ err error }

func (f failedLogin) Login(context.Context, *vault.Client) (*vault.Secret, error) { return nil, f.err }

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
	logins  int
	expires time.Time // zero: does not expire (or unknown), or a watcher renews it
	// watcher keeps the current login alive; stopped by Close or when the
	// login is replaced.
	watcher *vault.LifetimeWatcher
	wg      sync.WaitGroup
	closed  bool
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
	if c.closed {
		return nil, errors.New("vault client closed")
	}
	if c.token == "" || (!c.expires.IsZero() && time.Until(c.expires) < time.Minute) {
		if err := c.login(ctx); err != nil {
			return nil, err
		}
	}
	bot, err := c.api.Clone()
	if err != nil {
		return nil, err
	}
	bot.SetToken(c.token)
	return bot, nil
}

// login logs in with c.mu held, and starts a LifetimeWatcher on a
// renewable token.
func (c *Client) login(ctx context.Context) error {
	c.stopWatcher()
	anon, err := c.api.Clone()
	if err != nil {
		return err
	}
	anon.ClearToken()
	sec, err := c.o.Login.Login(ctx, anon)
	if err != nil {
		return err
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return errors.New("login returned no token")
	}
	c.logins++
	c.token, c.expires = sec.Auth.ClientToken, time.Time{}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	if !sec.Auth.Renewable || ttl <= 0 {
		if ttl > 0 {
			c.expires = time.Now().Add(ttl)
		}
		return nil
	}
	// The watcher renews with the token itself (auth/token/renew-self).
	renewer, err := c.api.Clone()
	if err != nil {
		return err
	}
	renewer.SetToken(c.token)
	w, err := renewer.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: sec})
	if err != nil {
		return err
	}
	c.watcher = w
	token := c.token
	c.wg.Add(2)
	go func() { defer c.wg.Done(); w.Start() }()
	go func() {
		defer c.wg.Done()
		for {
			select {
			case err := <-w.DoneCh():
				// Renewal is over: the token reached its max TTL, or
				// renewing failed until it nearly expired. Log in afresh
				// on the next request.
				c.mu.Lock()
				if c.token == token {
					c.token = ""
				}
				c.mu.Unlock()
				c.o.Logger.Info("vault login no longer renewable; logging in again on next use", "err", err)
				return
			case r := <-w.RenewCh():
				if r != nil && r.Secret != nil && r.Secret.Auth != nil {
					c.o.Logger.Debug("vault login renewed", "ttl", r.Secret.Auth.LeaseDuration)
				}
			}
		}
	}()
	return nil
}

// stopWatcher stops the current login's watcher, with c.mu held. Its
// goroutines end on their own (Close waits for them).
func (c *Client) stopWatcher() {
	if c.watcher != nil {
		c.watcher.Stop()
		c.watcher = nil
	}
}

// Close stops keeping the login alive and waits for that to end. The token
// is left to expire by its TTL.
func (c *Client) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	c.closed = true
	c.stopWatcher()
	c.mu.Unlock()
	c.wg.Wait()
	return nil
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
	// What Vault says the token has, looked up by accessor (not with the
	// token, which would spend one of its uses): a role's max TTL can
	// shorten it silently.
	if look, err := bot.Auth().Token().LookupAccessorWithContext(ctx, accessor); err == nil {
		if n, ok := look.Data["creation_ttl"].(json.Number); ok {
			if secs, err := n.Int64(); err == nil && secs > 0 && time.Duration(secs)*time.Second < ttl {
				ttl = time.Duration(secs) * time.Second
			}
		}
	} else {
		c.o.Logger.Warn("look up minted token's TTL; using the TTL Vault answered with", "accessor", accessor, "err", err)
	}
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
	cred := runner.NewCredential(accessor, time.Now().Add(ttl), env)
	cred.Granted = ttl
	return cred, nil
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
