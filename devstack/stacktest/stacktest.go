// Package stacktest starts devstack components for tests: each one is
// stopped when the test ends, and a missing tool fails the test loudly.
package stacktest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/bwrap"
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

// Durable are the arguments of a Redis node that forgets nothing it
// acknowledged: every write in the append-only file, fsynced.
var Durable = []string{"--appendonly", "yes", "--appendfsync", "always"}

// RedisCluster starts a Redis Cluster for the test (in a directory of the
// test's unless o.Dir names one), and stops it when the test ends.
func RedisCluster(t testing.TB, o devstack.RedisClusterOptions) *devstack.RedisCluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	c, err := devstack.StartRedisClusterWith(context.Background(), o)
	if err != nil {
		t.Fatalf("redis cluster: %v (the README's test command installs redis-server)", err)
	}
	t.Cleanup(c.Stop)
	return c
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

// Dir returns a directory for the test that a sandboxed run can reach:
// runs drop to another uid when the tests run as root, so it and its
// parents allow others to pass through (not to list). It is removed when
// the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "twokey-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Writable makes dir/name, a directory sandboxed runs may write to (a
// local backend's state, what a test's provisioners record).
func Writable(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		t.Fatal(err)
	}
	return p
}

// Sandbox returns the bubblewrap sandbox the tests run terraform in, with
// writable visible read-write, or fails the test: a test never falls back
// to running terraform unconfined.
func Sandbox(t testing.TB, writable ...string) runner.Sandbox {
	t.Helper()
	sb, err := bwrap.New(context.Background(), bwrap.Options{Writable: writable})
	if err != nil {
		t.Fatalf("sandbox: %v (the README's test command installs bubblewrap)", err)
	}
	return sb
}

// removeAll removes what a run that dropped to another uid left.
func removeAll(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// Buffer is a bytes.Buffer that processes and goroutines may write to while
// a test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	lootOnce sync.Once
	lootBin  []byte
	lootErr  error
)

// LootProvider builds devstack/lootprovider, a Terraform provider whose data
// source loot_run runs any program at plan time, once per test binary, and
// returns the binary: what a hostile pull request ships in
// terraform.d/plugins/example.com/twokey/loot/1.0.0/<os_arch>/.
func LootProvider(t testing.TB) []byte {
	t.Helper()
	lootOnce.Do(func() {
		out := filepath.Join(os.TempDir(), fmt.Sprintf("twokey-lootprovider-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", out, "github.com/twokey/twokey/devstack/lootprovider")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			lootErr = fmt.Errorf("build the loot provider: %v\n%s", err, b)
			return
		}
		lootBin, lootErr = os.ReadFile(out)
		_ = os.Remove(out)
	})
	if lootErr != nil {
		t.Fatal(lootErr)
	}
	return lootBin
}
