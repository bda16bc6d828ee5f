//go:build !demo

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDemoNotBuilt: `twokey demo` in a production build (no -tags demo)
// fails and says how to get the demo, instead of running it. It runs as its
// own process, as a person would run it.
func TestDemoNotBuilt(t *testing.T) {
	args, _ := json.Marshal([]string{"demo"})
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{mainArgsEnv + "=" + string(args), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("twokey demo: %v, want exit status 1", err)
	}
	if got := stderr.String(); !strings.Contains(got, "-tags demo") || !strings.Contains(got, "./scripts/demo.sh") {
		t.Errorf("twokey demo said %q; want how to build the demo", got)
	}
	if stdout.Len() > 0 {
		t.Errorf("twokey demo printed %q", stdout.String())
	}
}
