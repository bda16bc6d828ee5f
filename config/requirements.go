package config

import (
	"fmt"
	"strings"
)

// Requirement is a GitHub-side condition a pull request must meet before
// it is planned and again right before it is applied.
type Requirement string

const (
	// RequireApproved: an approving review, not dismissed or superseded,
	// on the current head commit, by someone who is not one of its authors.
	RequireApproved Requirement = "approved"
	// RequireMergeable: GitHub says the pull request is mergeable.
	RequireMergeable Requirement = "mergeable"
	// RequireUndiverged: the head contains the base branch's current tip.
	RequireUndiverged Requirement = "undiverged"
	// RequireCodeOwners: every changed file with code owners (CODEOWNERS
	// on the base branch) has an approving current-head review from one of
	// them who is not an author.
	RequireCodeOwners Requirement = "codeowners"
)

// requirements are the known requirements, in the order they are checked.
var requirements = []Requirement{RequireApproved, RequireMergeable, RequireUndiverged, RequireCodeOwners}

// Requirements returns every known requirement.
func Requirements() []Requirement { return append([]Requirement(nil), requirements...) }

// Valid reports whether r is a known requirement.
func (r Requirement) Valid() bool {
	for _, k := range requirements {
		if r == k {
			return true
		}
	}
	return false
}

func validateRequirements(reqs []Requirement) []error {
	var errs []error
	seen := map[Requirement]bool{}
	for _, r := range reqs {
		switch {
		case !r.Valid():
			names := make([]string, len(requirements))
			for i, k := range requirements {
				names[i] = string(k)
			}
			errs = append(errs, fmt.Errorf("requirements: %q is not a requirement; use any of %s", string(r), strings.Join(names, ", ")))
		case seen[r]:
			errs = append(errs, fmt.Errorf("requirements: %s is listed twice", r))
		}
		seen[r] = true
	}
	return errs
}
