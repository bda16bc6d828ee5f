package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
)

// Secret is a credential read from the environment. It prints as
// "[redacted]" wherever it is formatted or logged; Reveal gives the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value. Call it only where the value is sent to
// the service it is for.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoders from writing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Key is binary key material; like Secret it never prints.
type Key []byte

func (k Key) String() string   { return Secret(k).String() }
func (k Key) GoString() string { return k.String() }

// LogValue keeps slog from printing the key.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalText keeps encoders from writing the key.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Secrets are the credentials twokey itself uses, read from the environment
// variables the config names.
type Secrets struct {
	SlackBotToken Secret
	SlackAppToken Secret
	GitHubToken   Secret // optional: public repositories need none
	RedisPassword Secret // optional
	VaultToken    Secret // auth method "token"
	VaultRoleID   Secret // auth method "approle"
	VaultSecretID Secret // auth method "approle"
	PlanKey       Key    // optional: 32 bytes that seal saved plans
}

// LoadSecrets reads the secrets from getenv (os.Getenv in production) and
// reports every missing one at once.
func (c *Config) LoadSecrets(getenv func(string) string) (Secrets, error) {
	var errs []error
	need := func(name string) Secret {
		v := getenv(name)
		if v == "" {
			errs = append(errs, fmt.Errorf("environment variable %s is not set", name))
		}
		return Secret(v)
	}
	s := Secrets{
		SlackBotToken: need(c.Slack.BotTokenEnv),
		SlackAppToken: need(c.Slack.AppTokenEnv),
		GitHubToken:   Secret(getenv(c.GitHub.TokenEnv)),
	}
	if c.Redis.PasswordEnv != "" {
		s.RedisPassword = need(c.Redis.PasswordEnv)
	}
	if v := getenv(c.PlanKeyEnv); v != "" {
		key, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(key) != 32 {
			errs = append(errs, fmt.Errorf("environment variable %s must be 32 bytes in base64 (openssl rand -base64 32)", c.PlanKeyEnv))
		}
		s.PlanKey = key
	}
	switch c.Vault.Auth.Method {
	case "token":
		s.VaultToken = need(c.Vault.Auth.TokenEnv)
	case "approle":
		s.VaultRoleID = need(c.Vault.Auth.RoleIDEnv)
		s.VaultSecretID = need(c.Vault.Auth.SecretIDEnv)
	}
	return s, errors.Join(errs...)
}
