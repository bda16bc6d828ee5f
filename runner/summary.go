package runner

import (
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/approvals"
)

// Summarize counts what a plan does to managed resources. It reads only
// addresses and actions — never values, which `terraform show -json` prints
// in clear text even when they are sensitive.
func Summarize(p *tfjson.Plan) approvals.Summary {
	var s approvals.Summary
	if p == nil {
		return s
	}
	for _, rc := range p.ResourceChanges {
		if rc == nil || rc.Change == nil || rc.Mode == tfjson.DataResourceMode {
			continue
		}
		a := rc.Change.Actions
		var action approvals.Action
		switch {
		case a.Replace():
			action = approvals.ActionReplace
			s.Add++
			s.Destroy++
		case a.Create():
			action = approvals.ActionCreate
			s.Add++
		case a.Update():
			action = approvals.ActionUpdate
			s.Change++
		case a.Delete():
			action = approvals.ActionDelete
			s.Destroy++
		default:
			continue // no-op, read
		}
		s.Resources = append(s.Resources, approvals.Resource{Address: rc.Address, Action: action})
	}
	return s
}
