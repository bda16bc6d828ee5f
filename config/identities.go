package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Identity links a Slack user to a GitHub account, for organisations that
// manage the mapping centrally instead of letting people link themselves.
type Identity struct {
	Slack    string `yaml:"slack"`     // U…
	GitHub   string `yaml:"github"`    // login
	GitHubID int64  `yaml:"github_id"` // numeric account ID, which survives a rename
	// Emails are further commit addresses of the account, so a
	// Co-authored-by trailer naming one of them is recognised.
	Emails []string `yaml:"emails"`
}

// ApprovalRules say who, beyond the approver list, may not approve.
type ApprovalRules struct {
	// ExcludeAuthors refuses approvals from anyone whose linked GitHub
	// identity wrote or committed the change. Default: the environment's
	// protected setting.
	ExcludeAuthors *bool `yaml:"exclude_authors"`
	// ApproversMustBeLinked refuses approvals from anyone without a linked
	// GitHub identity. Default: the environment's protected setting.
	ApproversMustBeLinked *bool `yaml:"approvers_must_be_linked"`
}

// ExcludesAuthors reports whether code authors may not approve here.
func (e *Environment) ExcludesAuthors() bool {
	return orProtected(e.Approvals.ExcludeAuthors, e.Protected)
}

// RequiresLinkedApprovers reports whether approvers need a linked GitHub
// identity here.
func (e *Environment) RequiresLinkedApprovers() bool {
	return orProtected(e.Approvals.ApproversMustBeLinked, e.Protected)
}

func orProtected(v, protected *bool) bool {
	if v != nil {
		return *v
	}
	return protected == nil || *protected
}

// IdentityOf returns the configured identity of a Slack user.
func (c *Config) IdentityOf(slack string) (Identity, bool) {
	for _, id := range c.Identities {
		if id.Slack == slack {
			return id, true
		}
	}
	return Identity{}, false
}

var githubLoginRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)

func (c *Config) validateIdentities() []error {
	var errs []error
	seen := map[string]bool{}
	for i, id := range c.Identities {
		where := fmt.Sprintf("identities[%d]", i)
		if !userRE.MatchString(id.Slack) {
			errs = append(errs, fmt.Errorf("%s: slack %q is not a Slack user ID (U…)", where, id.Slack))
		}
		if seen[id.Slack] {
			errs = append(errs, fmt.Errorf("%s: %s is listed twice", where, id.Slack))
		}
		seen[id.Slack] = true
		if !githubLoginRE.MatchString(id.GitHub) {
			errs = append(errs, fmt.Errorf("%s: github %q is not a GitHub login", where, id.GitHub))
		}
		if id.GitHubID <= 0 {
			errs = append(errs, fmt.Errorf("%s: github_id is required (the account's number, from GET /users/%s)", where, id.GitHub))
		}
		for _, e := range id.Emails {
			if !strings.Contains(e, "@") {
				errs = append(errs, fmt.Errorf("%s: emails: %q is not an email address", where, e))
			}
		}
	}
	return errs
}
