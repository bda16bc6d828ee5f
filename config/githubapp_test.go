package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A GitHub App is configured whole or not at all: app_id, installation_id
// and a private key.
func TestGitHubAppAllOrNone(t *testing.T) {
	for _, tt := range []struct {
		name, github string
		want         string // "" : valid
	}{
		{"none", `{}`, ""},
		{"whole", `{app_id: 1, installation_id: 2, app_private_key_file: /k.pem}`, ""},
		{"key from the environment", `{app_id: 1, installation_id: 2}`, ""},
		{"no installation", `{app_id: 1, app_private_key_file: /k.pem}`, "github.installation_id is not"},
		{"no app", `{installation_id: 2, app_private_key_file: /k.pem}`, "github.app_id is not"},
		{"only a key", `{app_private_key_file: /k.pem}`, "github.app_id is not"},
		{"only a key variable", `{app_private_key_env: APP_KEY}`, "github.app_id is not"},
		{"two keys", `{app_id: 1, installation_id: 2, app_private_key_file: /k.pem, app_private_key_env: APP_KEY}`, "not both"},
		{"negative", `{app_id: -1, installation_id: 2}`, "positive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(minimal + "github: " + tt.github + "\n"))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// The App's private key comes from the file the config names, or from
// GITHUB_APP_PRIVATE_KEY (or its _FILE); it must be an RSA key in PEM; no
// error quotes it; with an App the personal token is not read; and a key
// without an App is a mistake worth saying.
func TestGitHubAppKey(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecBytes, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecBytes}))
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile, badFile := file("app.pem", pkcs1), file("bad.pem", "not a key MIIsecret")
	app := func(keyFile string) *Config {
		c, err := Parse(strings.NewReader(minimal + "github: {app_id: 7, installation_id: 8, app_private_key_file: '" + keyFile + "'}\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	appEnv, err := Parse(strings.NewReader(minimal + "github: {app_id: 7, installation_id: 8}\n"))
	if err != nil {
		t.Fatal(err)
	}
	noApp, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	env := func(kv ...string) func(string) string {
		m := map[string]string{"GITHUB_TOKEN": "ghp_personal"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tt := range []struct {
		name    string
		c       *Config
		getenv  func(string) string
		wantKey string
		wantErr string
	}{
		{"from the config's file", app(keyFile), env(), pkcs1, ""},
		{"from the variable", appEnv, env("GITHUB_APP_PRIVATE_KEY", pkcs8), pkcs8, ""},
		{"from the variable's file", appEnv, env("GITHUB_APP_PRIVATE_KEY_FILE", keyFile), strings.TrimRight(pkcs1, "\n"), ""},
		{"both", app(keyFile), env("GITHUB_APP_PRIVATE_KEY", pkcs1), "", "set one"},
		{"none", appEnv, env(), "", "private key is not set"},
		{"missing file", app(filepath.Join(dir, "nope.pem")), env(), "", "app_private_key_file"},
		{"not PEM", app(badFile), env(), "", "not a PEM private key"},
		{"not RSA", appEnv, env("GITHUB_APP_PRIVATE_KEY", ecPEM), "", "not an RSA private key"},
		{"key without an App", noApp, env("GITHUB_APP_PRIVATE_KEY", pkcs1), "", "github.app_id is not"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.c.LoadSecrets(tt.getenv, Needs{})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), "MII") || strings.Contains(err.Error(), "PRIVATE KEY-----")) {
				t.Fatalf("the error quotes the key: %v", err)
			}
			if s.GitHubAppKey.Reveal() != tt.wantKey {
				t.Errorf("key = %d bytes, want %d", len(s.GitHubAppKey.Reveal()), len(tt.wantKey))
			}
			if tt.c.GitHub.App() && s.GitHubToken != "" {
				t.Error("the personal token was read with an App configured")
			}
		})
	}
}
