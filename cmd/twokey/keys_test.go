package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twokey keygen writes a key pair; check-config reads every key file the
// config names and says which one it cannot.
func TestKeygenAndCheckConfig(t *testing.T) {
	dir := t.TempDir()
	env := func(k string) string {
		if k == "TWOKEY_PLAN_KEY" {
			return "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
		}
		if strings.HasSuffix(k, "_FILE") || k == "CREDENTIALS_DIRECTORY" {
			return "" // no secret comes from a file
		}
		if k == "GITHUB_APP_PRIVATE_KEY" {
			return "" // the example uses a token, and a stray App key is refused
		}
		return "x-" + k // every secret the example names is "set"
	}
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := Main(context.Background(), args, &out, &out, env)
		return code, out.String()
	}
	example, err := os.ReadFile("../../deploy/twokey.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "twokey.yaml")
	if err := os.WriteFile(cfg, example, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run("check-config", "--config", cfg); code == 0 || !strings.Contains(out, "signing keys") ||
		!strings.Contains(out, "/etc/twokey/keys/serve-1.pub") {
		t.Fatalf("check-config with missing key files: %d %s", code, out)
	}
	for _, name := range []string{"serve-1", "runner-prod-1"} {
		if code, out := run("keygen", filepath.Join(dir, name)); code != 0 || !strings.Contains(out, "key ") {
			t.Fatalf("keygen: %d %s", code, out)
		}
	}
	if code, out := run("keygen", filepath.Join(dir, "serve-1")); code == 0 {
		t.Fatalf("keygen overwrote a key: %s", out)
	}
	if err := os.WriteFile(cfg, bytes.ReplaceAll(example, []byte("/etc/twokey/keys"), []byte(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := run("check-config", "--config", cfg); code != 0 {
		t.Fatalf("check-config with the keys in place: %d %s", code, out)
	}
}
