// Package stacktest starts devstack components for tests: each one is
// stopped when the test ends, and a missing tool fails the test loudly.
package stacktest

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack"
)

// Tool returns the path of an installed tool or fails the test.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := devstack.Tool(name)
	if err != nil {
		t.Fatalf("%v (the README's test command installs it)", err)
	}
	return p
}

// Redis starts a redis-server for the test.
func Redis(t testing.TB, args ...string) *devstack.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := devstack.StartRedis(ctx, devstack.RedisOptions{Dir: t.TempDir(), Args: args, Log: logWriter(t)})
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// Vault starts a Vault dev server for the test.
func Vault(t testing.TB) *devstack.Vault {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := devstack.StartVault(ctx, devstack.VaultOptions{Dir: t.TempDir(), Log: logWriter(t)})
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(func() { _ = v.Stop() })
	return v
}

// logWriter sends server output to stderr when TWOKEY_TEST_VERBOSE is set.
func logWriter(t testing.TB) io.Writer {
	if os.Getenv("TWOKEY_TEST_VERBOSE") != "" {
		return os.Stderr
	}
	return io.Discard
}
