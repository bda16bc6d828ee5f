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
	env      map[string]string
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
