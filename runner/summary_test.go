package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

const backendTF = "terraform {\n  backend \"local\" {}\n}\n"

// TestEveryChangeCounted applies a base configuration through the runner,
// then plans and applies each kind of change a summary used to miss: the
// plan must count it, must not end as "no changes", and must apply.
func TestEveryChangeCounted(t *testing.T) {
	base := backendTF + `
resource "terraform_data" "a" { input = "a" }
resource "terraform_data" "b" { input = "b" }
output "kept" { value = "same" }
`
	tests := []struct {
		name  string
		tf    string
		want  string // Summary.Counts()
		check func(t *testing.T, s approvals.Summary)
	}{
		{name: "import-only", tf: base + `
import {
  to = terraform_data.c
  id = "imported-id"
}
resource "terraform_data" "c" {}
`, want: "+0 ~0 -0 import 1", check: func(t *testing.T, s approvals.Summary) {
			if len(s.Resources) != 1 || s.Resources[0].Action != approvals.ActionImport || !s.Resources[0].Imported {
				t.Errorf("resources = %+v", s.Resources)
			}
		}},
		{name: "moved-only", tf: strings.Replace(base, `"terraform_data" "a"`, `"terraform_data" "renamed"`, 1) + `
moved {
  from = terraform_data.a
  to   = terraform_data.renamed
}
`, want: "+0 ~0 -0 →1", check: func(t *testing.T, s approvals.Summary) {
			want := approvals.Resource{Address: "terraform_data.renamed", Action: approvals.ActionMove, From: "terraform_data.a"}
			if len(s.Resources) != 1 || s.Resources[0] != want {
				t.Errorf("resources = %+v", s.Resources)
			}
		}},
		{name: "removed-only", tf: strings.Replace(base, `resource "terraform_data" "b" { input = "b" }`, `
removed {
  from = terraform_data.b
  lifecycle {
    destroy = false
  }
}`, 1), want: "+0 ~0 -0 ⇥1", check: func(t *testing.T, s approvals.Summary) {
			if len(s.Resources) != 1 || s.Resources[0].Action != approvals.ActionForget || s.Resources[0].Address != "terraform_data.b" {
				t.Errorf("resources = %+v", s.Resources)
			}
		}},
		{name: "output-only", tf: strings.Replace(base, `value = "same"`, `value = "different"`, 1) + `
output "new" { value = 1 }
`, want: "+0 ~0 -0 outputs 2"},
		{name: "mixed", tf: backendTF + `
resource "terraform_data" "renamed" {
  input = "a"
}
moved {
  from = terraform_data.a
  to   = terraform_data.renamed
}
resource "terraform_data" "b" {
  input            = "b"
  triggers_replace = ["now"]
}
import {
  to = terraform_data.c
  id = "imported-id"
}
resource "terraform_data" "c" {}
resource "terraform_data" "d" { input = "d" }
output "kept" { value = "changed" }
`, want: "+2 ~0 -1 ±1 →1 import 1 outputs 1"},
	}
	for _, bin := range []struct{ name, version string }{{"terraform", "1.12.2"}, {"tofu", "1.12.6"}} {
		for _, tt := range tests {
			t.Run(bin.name+"/"+tt.name, func(t *testing.T) {
				f := setup(t, 30*time.Second)
				if bin.name != "terraform" {
					r, err := f.runner(t, func(o *runner.Options) { o.Binary, o.Version = stacktest.Tool(t, bin.name), bin.version })
					if err != nil {
						t.Fatal(err)
					}
					f.r = r
				}
				const sha2 = "2222222222222222222222222222222222222222"
				f.src.trees[sha1] = map[string]string{"infra/main.tf": base}
				f.src.trees[sha2] = map[string]string{"infra/main.tf": tt.tf}
				applyThrough(t, f, "p1", sha1)

				s := applyThrough(t, f, "p2", sha2)
				if got := s.Counts(); got != tt.want {
					t.Errorf("counts = %q, want %q (%+v)", got, tt.want, s)
				}
				if !s.Changes {
					t.Error("terraform's has-changes answer was lost")
				}
				if tt.check != nil {
					tt.check(t, s)
				}
				// Applied, the configuration has nothing left to do.
				f.src.trees["3333333333333333333333333333333333333333"] = map[string]string{"infra/main.tf": tt.tf}
				_, res := f.planReleased(t, "p3", "3333333333333333333333333333333333333333")
				if res.Summary.HasChanges() {
					t.Errorf("after apply, plan still has changes: %+v", res.Summary)
				}
			})
		}
	}
}

// applyThrough plans sha, checks that the plan waits for approval rather
// than ending as "no changes", applies it with a grant and releases the
// lock. It returns the plan's summary.
func applyThrough(t *testing.T, f fixture, id, sha string) approvals.Summary {
	t.Helper()
	lease, res := f.plan(t, id, sha)
	p, err := approvals.New(approvals.Request{ID: id, Env: "staging", SHA: sha, Requester: "U", Fence: 1, LockOwner: "o", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p, _ = approvals.Planned(p, res.Digest, res.Summary, approvals.Assessment{}, time.Hour, time.Now()); p.Status != approvals.StatusPending {
		t.Fatalf("%s: plan is %s, not pending: %+v", id, p.Status, res.Summary)
	}
	if _, err := f.r.Apply(context.Background(), runner.ApplyJob{Permit: grant(t, id, lease, sha, res), Rev: f.rev(sha), Target: f.target}); err != nil {
		t.Fatalf("apply %s: %v", id, err)
	}
	if err := f.locks.Release(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	return res.Summary
}

// planReleased plans sha and releases the lock.
func (f fixture) planReleased(t *testing.T, id, sha string) (runner.Lease, runner.PlanResult) {
	t.Helper()
	lease, res := f.plan(t, id, sha)
	if err := f.locks.Release(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	return lease, res
}

// A deposed object — what a create_before_destroy replacement whose destroy
// failed leaves behind — is planned for deletion under its resource's
// address, beside whatever that resource's current object does. The
// preview lists both, as the saved plan does (f.plan compares them).
func TestDeposedObjectPreviewed(t *testing.T) {
	f := setup(t, 30*time.Second)
	base := backendTF + `
resource "terraform_data" "a" {
  input = "a"
  lifecycle { create_before_destroy = true }
}
resource "terraform_data" "b" { input = "b" }
`
	f.src.trees[sha1] = map[string]string{"infra/main.tf": base}
	applyThrough(t, f, "p1", sha1)
	depose(t, f.target.BackendConfig["path"], "a", "b")

	for i, tt := range []struct {
		tf   string
		want []approvals.Resource
	}{
		{base, []approvals.Resource{{Address: "terraform_data.a", Action: approvals.ActionDelete},
			{Address: "terraform_data.b", Action: approvals.ActionDelete}}},
		{strings.Replace(strings.Replace(base, `input = "a"`, `input = "a"`+"\n  triggers_replace = [\"now\"]", 1), `"b" }`, `"c" }`, 1),
			[]approvals.Resource{{Address: "terraform_data.a", Action: approvals.ActionReplace},
				{Address: "terraform_data.a", Action: approvals.ActionDelete},
				{Address: "terraform_data.b", Action: approvals.ActionUpdate},
				{Address: "terraform_data.b", Action: approvals.ActionDelete}}},
	} {
		sha := strings.Repeat(strconv.Itoa(i+2), 40)
		f.src.trees[sha] = map[string]string{"infra/main.tf": tt.tf}
		_, res := f.planReleased(t, fmt.Sprintf("p%d", i+2), sha)
		if !reflect.DeepEqual(res.Summary.Resources, tt.want) {
			t.Errorf("plan %d: resources %+v, want %+v", i+2, res.Summary.Resources, tt.want)
		}
	}
}

// depose adds to the local state at path a deposed copy of each named
// terraform_data's object.
func depose(t *testing.T, path string, names ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var state map[string]any
	if err := json.Unmarshal(b, &state); err != nil {
		t.Fatal(err)
	}
	for _, r := range state["resources"].([]any) {
		r := r.(map[string]any)
		if !slices.Contains(names, r["name"].(string)) {
			continue
		}
		inst := maps.Clone(r["instances"].([]any)[0].(map[string]any))
		attrs := maps.Clone(inst["attributes"].(map[string]any))
		attrs["id"] = "deposed-" + r["name"].(string)
		inst["attributes"], inst["deposed"] = attrs, "0badc0de"
		r["instances"] = append(r["instances"].([]any), inst)
	}
	state["serial"] = state["serial"].(float64) + 1
	if b, err = json.Marshal(state); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The preview lists the resources in the saved plan's order whatever
// order each lists them in: the saved plan puts the root module first and
// count keys in numeric order, the stream comes as terraform got to each,
// and a sort of addresses as text puts neither the same way. f.plan
// compares the two.
func TestPreviewOrderIsTheSavedPlans(t *testing.T) {
	for name, tf := range map[string]string{
		"module and root": backendTF + `
resource "terraform_data" "root" { input = "x" }
module "m" { source = "./m" }
`,
		"count of eleven": backendTF + `
resource "terraform_data" "c" {
  count = 11
  input = count.index
}
`,
		"a name that sorts before a key": backendTF + `
resource "terraform_data" "a" {
  count = 1
  input = "x"
}
resource "terraform_data" "a-b" { input = "y" }
`,
	} {
		t.Run(name, func(t *testing.T) {
			f := setup(t, 30*time.Second)
			f.src.trees[sha1] = map[string]string{"infra/main.tf": tf,
				"infra/m/main.tf": `resource "terraform_data" "inner" { input = "y" }` + "\n"}
			if _, res := f.planReleased(t, "p1", sha1); len(res.Summary.Resources) < 2 {
				t.Fatalf("resources %+v", res.Summary.Resources)
			}
		})
	}
}
