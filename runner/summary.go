package runner

import (
	"cmp"
	"slices"
	"strings"

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
		r := approvals.Resource{Address: rc.Address, Imported: rc.Change.Importing != nil}
		if rc.PreviousAddress != rc.Address {
			r.From = rc.PreviousAddress
		}
		switch {
		case a.Replace():
			r.Action = approvals.ActionReplace
		case a.Create():
			r.Action = approvals.ActionCreate
		case a.Update():
			r.Action = approvals.ActionUpdate
		case a.Delete():
			r.Action = approvals.ActionDelete
		case a.Forget():
			r.Action = approvals.ActionForget
		case r.Imported:
			r.Action = approvals.ActionImport
		case r.From != "":
			r.Action = approvals.ActionMove
		default:
			continue // no-op, read
		}
		count(&s, r)
	}
	for _, oc := range p.OutputChanges {
		if oc != nil && !oc.Actions.NoOp() && len(oc.Actions) > 0 {
			s.Outputs++
		}
	}
	sortResources(&s)
	return s
}

// sortResources puts a summary's resources in one order, so that two
// summaries of the same changes are equal whatever order terraform listed
// them in: the saved plan sorts by module, type, name and then instance key
// (numbers as numbers); plan -json's stream comes as terraform got to each.
// By address, and under one address a resource's current object before its
// deposed ones (left by a create_before_destroy replacement whose destroy
// failed), which can only be deleted; the rest only breaks ties between
// entries nothing tells apart.
func sortResources(s *approvals.Summary) {
	deleted := func(r approvals.Resource) int {
		if r.Action == approvals.ActionDelete {
			return 1
		}
		return 0
	}
	slices.SortFunc(s.Resources, func(a, b approvals.Resource) int {
		return cmp.Or(strings.Compare(a.Address, b.Address), deleted(a)-deleted(b), strings.Compare(string(a.Action), string(b.Action)),
			strings.Compare(a.From, b.From), boolCompare(a.Imported, b.Imported))
	})
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// count adds r to s: to its resources, and to the counts of what happens to
// it. The saved plan's JSON and terraform's stream are counted alike.
func count(s *approvals.Summary, r approvals.Resource) {
	switch r.Action {
	case approvals.ActionReplace:
		s.Add++
		s.Destroy++
		s.Replace++
	case approvals.ActionCreate:
		s.Add++
	case approvals.ActionUpdate:
		s.Change++
	case approvals.ActionDelete:
		s.Destroy++
	case approvals.ActionForget:
		s.Forget++
	}
	if r.Imported {
		s.Import++
	}
	if r.From != "" {
		s.Move++
	}
	s.Resources = append(s.Resources, r)
}
