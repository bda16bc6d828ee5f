package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/policy"
)

const library = "../deploy/policies"

// TestLibraryRegoTests runs the shipped library's own Rego tests with OPA's
// tester, as `opa test deploy/policies` would.
func TestLibraryRegoTests(t *testing.T) {
	results, err := tester.Run(context.Background(), library)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 15 {
		t.Fatalf("only %d Rego tests ran", len(results))
	}
	for _, r := range results {
		if !r.Pass() {
			t.Errorf("%s.%s: fail=%v err=%v", r.Package, r.Name, r.Fail, r.Error)
		}
	}
}

// plan reads a plan as `terraform show -json` prints it.
func plan(t testing.TB, js string) *tfjson.Plan {
	t.Helper()
	var p tfjson.Plan
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

const riskyPlan = `{"format_version":"1.2","terraform_version":"1.12.2","resource_changes":[
 {"address":"aws_security_group.web","mode":"managed","type":"aws_security_group","name":"web","change":{"actions":["create"],"before":null,
  "after":{"ingress":[{"cidr_blocks":["0.0.0.0/0"],"from_port":22,"to_port":22}],"tags":{"owner":"a","cost-center":"1"}}}},
 {"address":"aws_iam_policy.admin","mode":"managed","type":"aws_iam_policy","name":"admin","change":{"actions":["create"],"before":null,
  "after":{"policy":"{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}","tags":{"owner":"a"}}}},
 {"address":"aws_db_instance.main","mode":"managed","type":"aws_db_instance","name":"main","change":{"actions":["delete"],"before":{"tags":{"critical":"true"}},"after":null}},
 {"address":"aws_instance.app","mode":"managed","type":"aws_instance","name":"app","change":{"actions":["delete","create"],"before":{},"after":{"tags":{"owner":"a","cost-center":"1"}}}},
 {"address":"terraform_data.quiet","mode":"managed","type":"terraform_data","name":"quiet","change":{"actions":["no-op"],"before":{},"after":{}}}
]}`

func TestLibraryOnAPlan(t *testing.T) {
	a, err := policy.New().Check(context.Background(), library, plan(t, riskyPlan))
	if err != nil {
		t.Fatal(err)
	}
	if a.Status() != approvals.PolicyDenied {
		t.Fatalf("status %s", a.Status())
	}
	var denied []string
	for _, f := range a.Denied {
		denied = append(denied, f.Rule+": "+f.Message)
	}
	want := []string{
		`twokey.iam.deny: aws_iam_policy.admin: a statement allows every action ("*")`,
		`twokey.network.deny: aws_security_group.web: ingress from 0.0.0.0/0 (ports 22-22) is open to the internet`,
		`twokey.tags.deny: aws_iam_policy.admin: missing required tags ["cost-center"]`,
	}
	if strings.Join(denied, "\n") != strings.Join(want, "\n") {
		t.Errorf("denied:\n%s\nwant:\n%s", strings.Join(denied, "\n"), strings.Join(want, "\n"))
	}
	if len(a.Warnings) != 1 || a.Warnings[0].Rule != "twokey.quorum.warn" {
		t.Errorf("warnings = %+v", a.Warnings)
	}
	if a.Quorum(2) != 3 || strings.Join(a.GroupNames(), ",") != "security" || len(a.Reasons) != 4 {
		t.Errorf("quorum %d groups %v reasons %q", a.Quorum(2), a.GroupNames(), a.Reasons)
	}
	kinds := map[approvals.RiskKind][]string{}
	for _, r := range a.Risks {
		kinds[r.Kind] = append(kinds[r.Kind], r.Address)
	}
	for kind, addr := range map[approvals.RiskKind]string{
		approvals.RiskDestroy: "aws_db_instance.main", approvals.RiskReplace: "aws_instance.app",
		approvals.RiskIAM: "aws_iam_policy.admin", approvals.RiskOpenIngress: "aws_security_group.web",
	} {
		if strings.Join(kinds[kind], ",") != addr {
			t.Errorf("risk %s: %v, want %s", kind, kinds[kind], addr)
		}
	}
	if len(a.Destroyed()) == 0 || strings.Join(a.Destroyed(), ",") != "aws_db_instance.main,aws_instance.app" {
		t.Errorf("dangerous %v destroyed %v", len(a.Destroyed()) > 0, a.Destroyed())
	}
}

// Without a policy directory, the built-in risks are still there.
func TestRisksWithoutPolicy(t *testing.T) {
	a, err := policy.New().Check(context.Background(), "", plan(t, riskyPlan))
	if err != nil {
		t.Fatal(err)
	}
	if a.Checked || a.Status() != approvals.PolicyNotChecked || len(a.Risks) != 4 {
		t.Fatalf("assessment = %+v", a)
	}
}

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Policies written for conftest work unchanged: Rego v0 syntax, package
// main, deny/violation/warn with string or {"msg"} values, rules with
// suffixes, nested directories. Test files are not loaded.
func TestConftestCompatible(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"main.rego": `package main

deny[msg] {
	rc := input.resource_changes[_]
	rc.change.actions[_] == "delete"
	msg := sprintf("no deletes: %s", [rc.address])
}

warn_replace[msg] {
	rc := input.resource_changes[_]
	rc.change.actions == ["delete", "create"]
	msg := sprintf("replaces %s", [rc.address])
}
`,
		"team/v1.rego": `package team.checks

violation contains {"msg": "no aws_iam_policy here", "details": {}} if {
	some rc in input.resource_changes
	rc.type == "aws_iam_policy"
}

helper := 42
`,
		"main_test.rego": `package main
test_broken if { false }
`,
	})
	a, err := policy.New().Check(context.Background(), dir, plan(t, riskyPlan))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal([]any{a.Denied, a.Warnings})
	want := `[[{"rule":"main.deny","msg":"no deletes: aws_db_instance.main"},{"rule":"main.deny","msg":"no deletes: aws_instance.app"},{"rule":"team.checks.violation","msg":"no aws_iam_policy here"}],[{"rule":"main.warn_replace","msg":"replaces aws_instance.app"}]]`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestBrokenPolicyIsAnError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"bad.rego": "package bad\ndeny contains msg if {"})
	if _, err := policy.New().Check(context.Background(), dir, plan(t, riskyPlan)); !errors.Is(err, policy.ErrPolicy) {
		t.Fatalf("err = %v", err)
	}
	if _, err := policy.New().Check(context.Background(), filepath.Join(dir, "missing"), plan(t, riskyPlan)); !errors.Is(err, policy.ErrPolicy) {
		t.Fatalf("missing dir: err = %v", err)
	}
}

// A changed file is picked up at the next check, without a restart.
func TestEngineReloadsChangedPolicies(t *testing.T) {
	dir := t.TempDir()
	e := policy.New()
	write(t, dir, map[string]string{"p.rego": "package p\nwarn contains \"one\" if { true }\n"})
	a, err := e.Check(context.Background(), dir, plan(t, riskyPlan))
	if err != nil || len(a.Warnings) != 1 || a.Warnings[0].Message != "one" {
		t.Fatalf("first: %+v %v", a, err)
	}
	write(t, dir, map[string]string{"p.rego": "package p\nwarn contains \"two!\" if { true }\n"})
	a, err = e.Check(context.Background(), dir, plan(t, riskyPlan))
	if err != nil || len(a.Warnings) != 1 || a.Warnings[0].Message != "two!" {
		t.Fatalf("after change: %+v %v", a, err)
	}
}

func TestRequiredRuleShapes(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"q.rego": `package q
required_approvals contains 4 if { true }
required_approvals contains {"approvals": 2, "msg": "two"} if { true }
required_groups contains "dba" if { true }
required_groups contains {"group": "security", "reason": "because"} if { true }
`, "r.rego": `package r
required_approvals := "many"
`})
	a, err := policy.New().Check(context.Background(), dir, plan(t, riskyPlan))
	if err != nil {
		t.Fatal(err)
	}
	if a.Required != 4 || strings.Join(a.GroupNames(), ",") != "dba,security" {
		t.Errorf("required %d groups %v", a.Required, a.GroupNames())
	}
	// A malformed requirement fails closed.
	if len(a.Denied) != 1 || a.Denied[0].Rule != "r.required_approvals" {
		t.Errorf("denied = %+v", a.Denied)
	}
}
