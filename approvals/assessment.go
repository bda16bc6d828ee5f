package approvals

import "slices"

// Assessment is what policy found in a plan before anyone was asked to
// approve it: rule results, the quorum the plan's risk asks for, and
// built-in risk flags. It carries messages and addresses, never values.
//
// It is data for a Plan to carry; the approval flow reads it through
// Status, Quorum, GroupNames and Destroyed.
type Assessment struct {
	// Checked: the environment's policies were evaluated. Risks are listed
	// either way.
	Checked  bool      `json:"checked,omitempty"`
	Denied   []Finding `json:"denied,omitempty"`
	Warnings []Finding `json:"warnings,omitempty"`
	// Required asks for more approvals than the environment's own number,
	// and Groups for approvals from particular groups; Reasons say why.
	Required int                `json:"required_approvals,omitempty"`
	Groups   []GroupRequirement `json:"required_groups,omitempty"`
	Reasons  []string           `json:"reasons,omitempty"`
	Risks    []Risk             `json:"risks,omitempty"`
}

// Finding is one deny or warn result.
type Finding struct {
	Rule    string `json:"rule"` // package and rule, e.g. "twokey.network.deny"
	Message string `json:"msg"`
}

// GroupRequirement asks for at least one approval from a group.
type GroupRequirement struct {
	Group  string `json:"group"`
	Reason string `json:"reason,omitempty"`
}

// Risk is a built-in flag on one resource change.
type Risk struct {
	Kind    RiskKind `json:"kind"`
	Address string   `json:"address"`
	Detail  string   `json:"detail,omitempty"`
}

// RiskKind names a built-in risk.
type RiskKind string

const (
	RiskDestroy     RiskKind = "destroy"      // a resource is deleted
	RiskReplace     RiskKind = "replace"      // a resource is deleted and created again
	RiskIAM         RiskKind = "iam"          // an identity or access resource changes
	RiskOpenIngress RiskKind = "open_ingress" // a network rule admits the whole internet
)

// PolicyStatus sums an assessment up.
type PolicyStatus string

const (
	PolicyNotChecked PolicyStatus = "not_checked"
	PolicyPassed     PolicyStatus = "passed"
	PolicyWarnings   PolicyStatus = "warnings"
	PolicyDenied     PolicyStatus = "denied"
)

// Status is denied if any rule denied, else warnings if any warned.
func (a Assessment) Status() PolicyStatus {
	switch {
	case len(a.Denied) > 0:
		return PolicyDenied
	case len(a.Warnings) > 0:
		return PolicyWarnings
	case a.Checked:
		return PolicyPassed
	}
	return PolicyNotChecked
}

// Quorum is how many approvals the plan needs, given the environment's
// own number: policy can raise it, never lower it.
func (a Assessment) Quorum(env int) int { return max(env, a.Required) }

// GroupNames lists the groups that must each give an approval.
func (a Assessment) GroupNames() []string {
	var gs []string
	for _, g := range a.Groups {
		if !slices.Contains(gs, g.Group) {
			gs = append(gs, g.Group)
		}
	}
	return gs
}

// Destroyed lists the addresses the plan destroys or replaces, for a
// confirm dialog.
func (a Assessment) Destroyed() []string {
	var out []string
	for _, r := range a.Risks {
		if (r.Kind == RiskDestroy || r.Kind == RiskReplace) && !slices.Contains(out, r.Address) {
			out = append(out, r.Address)
		}
	}
	return out
}
