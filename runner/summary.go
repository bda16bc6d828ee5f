package runner

import (
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/approvals"
)

// Summarize counts what a plan does: resources created, updated, deleted,
// replaced, imported, moved and forgotten, and outputs changed. changes is
// terraform's own has-changes answer (terraform-exec's Plan result), kept
// so that a change nothing here counts still is one. It reads only
// addresses and actions — never values, which `terraform show -json` prints
// in clear text even when they are sensitive. The same for Terraform and
// OpenTofu, whose plan JSON agrees on all of it.
func Summarize(p *tfjson.Plan, changes bool) approvals.Summary {
	s := approvals.Summary{Changes: changes}
	if p == nil {
		return s
	}
	for _, rc := range p.ResourceChanges {
		if rc == nil || rc.Change == nil || rc.Mode == tfjson.DataResourceMode {
			continue
		}
		a := rc.Change.Actions
		imported := rc.Change.Importing != nil
		moved := rc.PreviousAddress != "" && rc.PreviousAddress != rc.Address
		var action approvals.Action
		switch {
		case a.Replace():
			action = approvals.ActionReplace
			s.Add++
			s.Destroy++
			s.Replace++
		case a.Create():
			action = approvals.ActionCreate
			s.Add++
		case a.Update():
			action = approvals.ActionUpdate
			s.Change++
		case a.Delete():
			action = approvals.ActionDelete
			s.Destroy++
		case a.Forget():
			action = approvals.ActionForget
			s.Forget++
		case imported:
			action = approvals.ActionImport
		case moved:
			action = approvals.ActionMove
		default:
			continue // no-op, read
		}
		r := approvals.Resource{Address: rc.Address, Action: action, Imported: imported}
		if imported {
			s.Import++
		}
		if moved {
			s.Move++
			r.From = rc.PreviousAddress
		}
		s.Resources = append(s.Resources, r)
	}
	for _, oc := range p.OutputChanges {
		if oc != nil && !oc.Actions.NoOp() && len(oc.Actions) > 0 {
			s.Outputs++
		}
	}
	return s
}
