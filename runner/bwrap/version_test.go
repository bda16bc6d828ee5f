package bwrap_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

// A box opened with the version the runner learned answers `version -json`
// with it, without starting the binary; anything else starts the binary.
func TestVersionIsAnsweredOnce(t *testing.T) {
	e := newEnv(t)
	sb := stacktest.Sandbox(t)
	marker := filepath.Join(e.loot, "started")
	bin := filepath.Join(e.root, "tool.sh")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho started > "+marker+"\necho \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	answer := `{"terraform_version":"1.12.2","provider_selections":{}}`
	dir := filepath.Join(e.data, "runs", "plan-acme-staging")
	box, err := sb.Open(runner.Run{Dir: dir, Binary: bin, Writable: []string{e.loot}, Version: []byte(answer)})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	run := func(args ...string) string {
		cmd := exec.Command(box.Exec(), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if out := run("version", "-json"); out != answer {
		t.Fatalf("version -json answered %q, want %q", out, answer)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the binary was started to answer version -json")
	}
	if out := run("version"); out != "version\n" {
		t.Fatalf("version answered %q: the binary was not asked", out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the binary was not started for another command")
	}
}
