package config

import (
	"strings"
	"testing"
)

// Protected environments refuse code authors and unlinked approvers unless
// told otherwise; unprotected ones do neither unless told to.
func TestApprovalRulesDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal + `
      - name: dev
        protected: false
        required_approvals: 1
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: dev-apply}}
      - name: sandbox
        protected: false
        required_approvals: 1
        approvals: {exclude_authors: true}
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: sandbox-apply}}
      - name: prod
        approvals: {exclude_authors: false, approvers_must_be_linked: false}
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: prod-apply}}
identities:
  - {slack: UAPPROVE1, github: octo-cat, github_id: 583231, emails: [octo@example.com]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ exclude, linked bool }{{true, true}, {false, false}, {true, false}, {false, false}} {
		e := &c.Projects[0].Environments[i]
		if e.ExcludesAuthors() != want.exclude || e.RequiresLinkedApprovers() != want.linked {
			t.Errorf("%s: exclude_authors %v, approvers_must_be_linked %v; want %+v", e.Name, e.ExcludesAuthors(), e.RequiresLinkedApprovers(), want)
		}
	}
	if id, ok := c.IdentityOf("UAPPROVE1"); !ok || id.GitHub != "octo-cat" || id.GitHubID != 583231 {
		t.Errorf("IdentityOf = %+v, %v", id, ok)
	}
}

func TestIdentitiesValidated(t *testing.T) {
	_, err := Parse(strings.NewReader(minimal + `
identities:
  - {slack: bob, github: "-bad", github_id: 0, emails: [nope]}
  - {slack: UAPPROVE1, github: a, github_id: 1}
  - {slack: UAPPROVE1, github: b, github_id: 2}
`))
	for _, want := range []string{`slack "bob" is not a Slack user ID`, `github "-bad" is not a GitHub login`, "github_id is required",
		`"nope" is not an email address`, "UAPPROVE1 is listed twice"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
