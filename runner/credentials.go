package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"
)

// Credentials mints short-lived credentials for one run and revokes them.
type Credentials interface {
	Mint(ctx context.Context, req CredentialRequest) (*Credential, error)
	// Revoke ends the credential and everything issued under it.
	Revoke(ctx context.Context, c *Credential) error
}

// CredentialRequest asks for a child token from a token role and the
// secrets to read with it.
type CredentialRequest struct {
	Role    string
	TTL     time.Duration
	NumUses int
	Secrets []SecretRef
	Purpose string // recorded with the token, e.g. "apply p-1a2b"
}

// SecretRef maps fields of the secret at Path to environment variables.
type SecretRef struct {
	Path string
	Env  map[string]string // ENV_VAR: field
}

// ErrCredentials means credentials could not be minted or read; nothing
// was run with them.
var ErrCredentials = errors.New("credentials unavailable")

// Credential is a minted token and the environment it unlocks. Its values
// are never printed.
type Credential struct {
	Accessor string // safe to log and record; not the token
	Expires  time.Time
	// Granted is the TTL Vault actually gave the token, read back after
	// minting: a token role's token_explicit_max_ttl or token_max_ttl, or
	// the mount's max TTL, can make it shorter than the request. Zero:
	// the time until Expires.
	Granted time.Duration
	env     map[string]string
}

// ErrTTLCapped means Vault granted a shorter TTL than the work needs.
var ErrTTLCapped = errors.New("credential TTL shorter than the work needs")

// TTLError is a credential Vault granted for less time than the work needs;
// it was revoked unused. errors.Is(err, ErrCredentials) and ErrTTLCapped.
type TTLError struct {
	Role      string
	Requested time.Duration
	Granted   time.Duration
	Needed    time.Duration // the apply timeout
}

func (e *TTLError) Error() string {
	return fmt.Sprintf("Vault token role %s granted a TTL of %s (asked for %s), shorter than the apply timeout %s: "+
		"the role's token_explicit_max_ttl or token_max_ttl, or the token mount's max TTL, caps it; the apply did not start",
		e.Role, e.Granted, e.Requested, e.Needed)
}

func (e *TTLError) Unwrap() []error { return []error{ErrTTLCapped, ErrCredentials} }

// granted is the credential's TTL as Vault granted it, measured from now
// when the adapter did not say.
func (c *Credential) granted(now time.Time) time.Duration {
	if c.Granted > 0 {
		return c.Granted
	}
	return c.Expires.Sub(now).Round(time.Second)
}

// NewCredential wraps a minted token's environment (VAULT_TOKEN and the
// mapped secret values).
func NewCredential(accessor string, expires time.Time, env map[string]string) *Credential {
	return &Credential{Accessor: accessor, Expires: expires, env: maps.Clone(env)}
}

// Env returns the environment variables the credential provides.
func (c *Credential) Env() map[string]string {
	if c == nil {
		return nil
	}
	return maps.Clone(c.env)
}

// Values returns every secret value, for redaction.
func (c *Credential) Values() []string {
	if c == nil {
		return nil
	}
	var v []string
	for _, s := range c.env {
		v = append(v, s)
	}
	return v
}

func (c *Credential) String() string {
	if c == nil {
		return "no credential"
	}
	return fmt.Sprintf("credential %s (%d values, redacted)", c.Accessor, len(c.env))
}

// GoString keeps %#v from printing the values.
func (c *Credential) GoString() string { return c.String() }
