package runner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/runner"
)

// fakeBinary writes, at path, a program that says it is terraform version
// v, by replacing whatever was there (a new file, as an upgrade would be).
func fakeBinary(t *testing.T, path, v string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho '{\"terraform_version\":%q,\"platform\":\"linux_amd64\",\"provider_selections\":{},\"terraform_outdated\":false}'\n", v)
	if err := os.WriteFile(path+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// The version is learned once per binary file: a binary replaced at the
// same path is checked again before the next run uses it, and refused if it
// is not the pinned version.
func TestReplacedBinaryIsCheckedAgain(t *testing.T) {
	f := setup(t, time.Minute)
	bins := filepath.Join(f.root, "bin")
	if err := os.Mkdir(bins, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(bins, "terraform")
	fakeBinary(t, bin, "1.12.2")
	r, err := f.runner(t, func(o *runner.Options) { o.Binary = bin })
	if err != nil {
		t.Fatalf("the pinned version was refused: %v", err)
	}
	fakeBinary(t, bin, "1.9.8")
	lease, err := f.locks.Acquire(context.Background(), "acme/staging", runner.Holder{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Plan(context.Background(), runner.PlanJob{PlanID: "p1", Rev: f.rev(sha1), Lease: lease, Target: f.target})
	if !errors.Is(err, runner.ErrBinary) || !strings.Contains(err.Error(), "1.9.8") {
		t.Fatalf("a replaced binary of another version was used: err = %v", err)
	}
}
