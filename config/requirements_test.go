package config

import (
	"slices"
	"strings"
	"testing"
)

func TestRequirements(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal + `
        requirements: [approved, mergeable, undiverged, codeowners]
      - name: dev
        protected: false
        required_approvals: 1
        approvers: {users: [UAPPROVE1]}
        vault: {apply: {role: dev-apply}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Requirement{RequireApproved, RequireMergeable, RequireUndiverged, RequireCodeOwners}
	if got := c.Projects[0].Environments[0].Requirements; !slices.Equal(got, want) {
		t.Errorf("staging requirements = %v, want %v", got, want)
	}
	if got := c.Projects[0].Environments[1].Requirements; len(got) != 0 {
		t.Errorf("dev requirements = %v, want none", got)
	}
	if !slices.Equal(Requirements(), want) {
		t.Errorf("Requirements() = %v", Requirements())
	}
}

func TestRequirementsValidated(t *testing.T) {
	tests := []struct {
		list string
		want []string
	}{
		{"[approved, reviewed]", []string{`requirements: "reviewed" is not a requirement; use any of approved, mergeable, undiverged, codeowners`}},
		{"[Approved]", []string{`"Approved" is not a requirement`}},
		{"[codeowners, mergeable, codeowners]", []string{"requirements: codeowners is listed twice"}},
		{`[""]`, []string{`"" is not a requirement`}},
	}
	for _, tt := range tests {
		_, err := Parse(strings.NewReader(minimal + "        requirements: " + tt.list + "\n"))
		for _, want := range tt.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error lacks %q: %v", tt.list, want, err)
			}
		}
		if err != nil && !strings.Contains(err.Error(), `environment "staging"`) && !strings.Contains(err.Error(), "staging") {
			t.Errorf("%s: error does not name the environment: %v", tt.list, err)
		}
	}
}
