package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/twokey/twokey/config/secret"
)

// Secret and Key are the secret package's: credentials that never print.
type (
	Secret = secret.Secret
	Key    = secret.Key
)

// Secrets are the credentials twokey itself uses, read from the environment
// variables the config names.
type Secrets struct {
	SlackBotToken Secret
	SlackAppToken Secret
	GitHubToken   Secret // optional: public repositories need none; not read with a GitHub App
	GitHubAppKey  Secret // the GitHub App's private key (PEM), with github.app_id
	RedisPassword Secret // optional
	VaultToken    Secret // auth method "token"
	VaultRoleID   Secret // auth method "approle"
	VaultSecretID Secret // auth method "approle"
	PlanKey       Key    // 32 bytes that seal saved plans; needed where plans run (Needs.Vault)
}

// Needs says which secrets a process reads; it reads no others, so a
// process never holds a credential it has no use for.
type Needs struct {
	Slack bool // serve
	// Vault: a process that runs plans and applies (serve with an embedded
	// runner, or a runner). It mints credentials with the Vault login, and
	// needs the plan key: a plan sealed with a key of the process's own could
	// be applied by no other process, nor by itself after a restart.
	Vault bool
	Pool  string // whose Vault login and plan key: a pool's name; "" for the top-level ones
}

// ForServe is what `twokey serve` needs with this config.
func (c *Config) ForServe() Needs { return Needs{Slack: true, Vault: c.Runner.IsEmbedded()} }

// ForRunner is what `twokey runner --pool pool` needs.
func (c *Config) ForRunner(pool string) Needs { return Needs{Vault: true, Pool: pool} }

// LoadSecrets reads the secrets n asks for from getenv (os.Getenv in
// production), or from files (see fromFiles), and reports every missing one
// at once.
func (c *Config) LoadSecrets(getenv func(string) string, n Needs) (Secrets, error) {
	var errs []error
	raw := getenv
	getenv = fromFiles(getenv, func(err error) { errs = append(errs, err) })
	need := func(name string) Secret {
		v := getenv(name)
		if v == "" {
			errs = append(errs, fmt.Errorf("environment variable %s is not set", name))
		}
		return Secret(v)
	}
	var s Secrets
	if c.GitHub.App() {
		s.GitHubAppKey = c.loadAppKey(getenv, func(err error) { errs = append(errs, err) })
	} else {
		s.GitHubToken = Secret(getenv(c.GitHub.TokenEnv))
		if name := c.GitHub.AppKeyEnv(); raw(name) != "" || raw(name+"_FILE") != "" {
			errs = append(errs, fmt.Errorf("%s is set but github.app_id is not: a GitHub App needs app_id, installation_id and its private key", name))
		}
	}
	if n.Slack {
		s.SlackBotToken = need(c.Slack.BotTokenEnv)
		s.SlackAppToken = need(c.Slack.AppTokenEnv)
	}
	if c.Redis.PasswordEnv != "" {
		s.RedisPassword = need(c.Redis.PasswordEnv)
	}
	// A runner of a pool seals its plans with the pool's own key when there
	// is one (TWOKEY_PLAN_KEY_PROD for pool prod), so that no other pool's
	// key opens or makes them. Each variable is read once, so that a
	// problem with its file is reported once.
	planKeyEnv, planKey, poolKeyEnv := c.PlanKeyEnv, "", ""
	if n.Pool != "" {
		poolKeyEnv = c.PlanKeyEnv + "_" + envSuffix(n.Pool)
		if planKey = getenv(poolKeyEnv); planKey != "" {
			planKeyEnv = poolKeyEnv
		}
	}
	if planKey == "" {
		planKey = getenv(c.PlanKeyEnv)
	}
	switch {
	case planKey != "":
		key, err := base64.StdEncoding.DecodeString(planKey)
		if err != nil || len(key) != 32 {
			errs = append(errs, fmt.Errorf("environment variable %s must be 32 bytes in base64 (openssl rand -base64 32)", planKeyEnv))
		}
		s.PlanKey = key
	case n.Vault && n.Pool != "":
		errs = append(errs, fmt.Errorf("environment variable %s is not set, nor %s: a runner seals plans with it, "+
			"so that another worker of its pool can apply them (openssl rand -base64 32)", poolKeyEnv, c.PlanKeyEnv))
	case n.Vault:
		errs = append(errs, fmt.Errorf("environment variable %s is not set: a process that runs plans seals them with it, "+
			"so that another replica, or this one after a restart, can apply them (openssl rand -base64 32)", planKeyEnv))
	}
	if n.Vault {
		auth, ok := c.Vault.Auth, true
		if n.Pool != "" {
			var p Pool
			if p, ok = c.PoolFor(n.Pool); ok {
				auth = p.Vault
			} else {
				errs = append(errs, fmt.Errorf("no pool %q in the config", n.Pool))
			}
		}
		switch {
		case !ok:
		case auth.Method == "token":
			s.VaultToken = need(auth.TokenEnv)
		case auth.Method == "approle":
			s.VaultRoleID = need(auth.RoleIDEnv)
			s.VaultSecretID = need(auth.SecretIDEnv)
		}
	}
	return s, errors.Join(errs...)
}

// loadAppKey reads the GitHub App's private key from
// github.app_private_key_file or the variable that may hold it, and checks
// that it is an RSA private key in PEM, as GitHub issues them. No error
// quotes the key.
func (c *Config) loadAppKey(getenv func(string) string, fail func(error)) Secret {
	name := c.GitHub.AppKeyEnv()
	v := getenv(name)
	if file := c.GitHub.AppPrivateKeyFile; file != "" {
		if v != "" {
			fail(fmt.Errorf("both github.app_private_key_file and %s are set; set one", name))
			return ""
		}
		b, err := os.ReadFile(file)
		if err != nil {
			fail(fmt.Errorf("github.app_private_key_file: %w", err))
			return ""
		}
		v = string(b)
	}
	if v == "" {
		fail(fmt.Errorf("the GitHub App's private key is not set: set github.app_private_key_file, or %s (or %s_FILE)", name, name))
		return ""
	}
	if err := checkRSAKey([]byte(v)); err != nil {
		fail(fmt.Errorf("the GitHub App's private key (%s): %w", appKeySource(c.GitHub.AppPrivateKeyFile, name), err))
		return ""
	}
	return Secret(v)
}

func appKeySource(file, env string) string {
	if file != "" {
		return file
	}
	return env
}

// checkRSAKey checks that b is an RSA private key in PEM (PKCS#1, as
// GitHub issues them, or PKCS#8).
func checkRSAKey(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("not a PEM private key (GitHub's download is one)")
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return errors.New("not an RSA private key")
	}
	if _, ok := k.(*rsa.PrivateKey); !ok {
		return errors.New("not an RSA private key: GitHub Apps sign with RS256")
	}
	return nil
}

// fromFiles lets every secret come from a file instead of the environment,
// as Kubernetes and systemd deliver credentials: for a variable NAME,
// NAME_FILE names a file that holds the value, and under systemd's
// LoadCredential= a file NAME in $CREDENTIALS_DIRECTORY does. A secret kept
// in a file is not in the process's environment at all. A trailing newline
// is dropped. Setting both NAME and NAME_FILE is an error.
func fromFiles(getenv func(string) string, fail func(error)) func(string) string {
	return func(name string) string {
		v, file := getenv(name), getenv(name+"_FILE")
		if file == "" {
			if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" && v == "" {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					file = filepath.Join(dir, name)
				}
			}
		}
		if file == "" {
			return v
		}
		if v != "" {
			fail(fmt.Errorf("both %s and %s_FILE are set; set one", name, name))
			return ""
		}
		b, err := os.ReadFile(file)
		if err != nil {
			fail(fmt.Errorf("%s_FILE: %w", name, err))
			return ""
		}
		return strings.TrimRight(string(b), "\r\n")
	}
}
