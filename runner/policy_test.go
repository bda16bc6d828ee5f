package runner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/policy"
	"github.com/twokey/twokey/runner"
)

// The runner hands the plan it already read to the policy step (no second
// show), and what comes back is redacted: a policy may quote any value.
func TestPlanIsAssessed(t *testing.T) {
	f := setup(t, 30*time.Second)
	r, err := f.runner(t, func(o *runner.Options) { o.Policy = policy.New() })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(`package org
deny contains sprintf("%s has input %v", [rc.address, rc.change.after.input]) if {
	some rc in input.resource_changes
	rc.type == "terraform_data"
	rc.change.actions == ["create"]
}
warn contains "always"
required_approvals := 3
`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.target.PolicyDir = dir
	f.src.trees[sha1] = map[string]string{"infra/main.tf": backendTF + `
variable "pw" {
  type      = string
  sensitive = true
  default   = "policy-quoted-secret-Hh5"
}
resource "terraform_data" "a" {
  input = nonsensitive(var.pw)
}
`}
	lease, res := f.plan(t, "p1", sha1)
	a := res.Policy
	if a.Status() != approvals.PolicyDenied || len(a.Denied) != 1 || a.Quorum(2) != 3 || len(a.Warnings) != 1 {
		t.Fatalf("assessment = %+v", a)
	}
	if got := a.Denied[0].Message; got != "terraform_data.a has input "+runner.Redacted {
		t.Errorf("deny message = %q", got)
	}

	// The flow does not act on the assessment yet: apply it, then destroy
	// it with no policy at all. The built-in risk flags are still there.
	if _, err := f.r.Apply(t.Context(), runner.ApplyJob{Permit: grant(t, "p1", lease, sha1, res), Rev: f.rev(sha1), Target: f.target}); err != nil {
		t.Fatal(err)
	}
	if err := f.locks.Release(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	f.target.PolicyDir = ""
	const sha2 = "2222222222222222222222222222222222222222"
	f.src.trees[sha2] = map[string]string{"infra/main.tf": backendTF}
	_, res = f.planReleased(t, "p2", sha2)
	if a := res.Policy; a.Checked || len(a.Destroyed()) == 0 || strings.Join(a.Destroyed(), ",") != "terraform_data.a" {
		t.Fatalf("assessment = %+v", a)
	}
}

// Policies that cannot be evaluated deny the plan instead of waving it
// through.
func TestBrokenPolicyDenies(t *testing.T) {
	f := setup(t, 30*time.Second)
	r, err := f.runner(t, func(o *runner.Options) { o.Policy = policy.New() })
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	f.target.PolicyDir = filepath.Join(t.TempDir(), "missing")
	_, res := f.planReleased(t, "p1", sha1)
	if res.Policy.Status() != approvals.PolicyDenied || !strings.Contains(res.Policy.Denied[0].Message, "could not be evaluated (reference ") {
		t.Fatalf("assessment = %+v", res.Policy)
	}
}

// BenchmarkPlanPolicy is a whole runner plan of 20 resources, without a
// policy step and with the shipped library: the policy step's share of
// plan latency.
//
//	go test -run '^$' -bench BenchmarkPlanPolicy -benchtime 20x ./runner
func BenchmarkPlanPolicy(b *testing.B) {
	var tf strings.Builder
	tf.WriteString(backendTF)
	for i := range 20 {
		fmt.Fprintf(&tf, "resource \"terraform_data\" \"r%d\" {\n  input = { n = %d, tags = { owner = \"a\" } }\n}\n", i, i)
	}
	for _, dir := range []string{"", "../deploy/policies"} {
		name := "policy=none"
		if dir != "" {
			name = "policy=library"
		}
		b.Run(name, func(b *testing.B) {
			f := setup(b, time.Minute)
			f.src.trees[sha1] = map[string]string{"infra/main.tf": tf.String()}
			if dir != "" {
				r, err := f.runner(b, func(o *runner.Options) { o.Policy = policy.New() })
				if err != nil {
					b.Fatal(err)
				}
				f.r = r
				f.target.PolicyDir = dir
			}
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				lease, err := f.locks.Acquire(ctx, "acme/staging", runner.Holder{}, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				res, err := f.r.Plan(ctx, runner.PlanJob{PlanID: fmt.Sprintf("p%d", i), Rev: f.rev(sha1), Lease: lease, Target: f.target})
				if err != nil || res.Summary.Add != 20 || (dir != "" && !res.Policy.Checked) {
					b.Fatalf("%v %+v", err, res.Summary)
				}
				if err := f.locks.Release(ctx, lease); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
