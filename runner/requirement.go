package runner

// Requirement is a GitHub-side condition a pull request must meet before it
// is approved and again right before it is applied (config spells the same
// names; a Source checks them).
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

// Unmet is a requirement a revision does not meet, with the reason a
// person reads ("GitHub says the pull request is not mergeable (state:
// dirty)").
type Unmet struct {
	Requirement Requirement `json:"requirement"`
	Reason      string      `json:"reason"`
}

func (u Unmet) String() string { return string(u.Requirement) + ": " + u.Reason }

// Valid reports whether r is a requirement a Source knows.
func (r Requirement) Valid() bool {
	switch r {
	case RequireApproved, RequireMergeable, RequireUndiverged, RequireCodeOwners:
		return true
	}
	return false
}
