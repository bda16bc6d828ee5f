package runner

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The pull request's code may leave, where the saved plan should be, a link
// to one of twokey's own files, or a FIFO that never ends; twokey reads
// neither.
func TestReadRunFileFollowsNothing(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("twokey's own file"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.tfplan")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.tfplan")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, fifo, filepath.Join(dir, "missing")} {
		if data, err := readRunFile(p); err == nil || !errors.Is(err, ErrSandbox) {
			t.Errorf("%s: read %q, err %v; want ErrSandbox", filepath.Base(p), data, err)
		}
	}
	plan := filepath.Join(dir, "plan.tfplan")
	if err := os.WriteFile(plan, []byte("plan bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := readRunFile(plan); err != nil || string(data) != "plan bytes" {
		t.Fatalf("a plain plan file: %q %v", data, err)
	}
}
