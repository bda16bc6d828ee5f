package runner

import (
	"encoding/json"
	"strconv"

	tfjson "github.com/hashicorp/terraform-json"
)

// SensitiveValues lists every value the plan marks sensitive: sensitive
// root variables, the before_sensitive and after_sensitive paths of every
// resource change and drift, sensitive values in planned values and prior
// state, and sensitive outputs. Wherever such a value also appears
// unmarked — an attribute derived with nonsensitive(), a provider that
// echoes it — it is still a secret, and the text people read must not
// carry it.
func SensitiveValues(p *tfjson.Plan) []string {
	if p == nil {
		return nil
	}
	var out []string
	collect := func(v, mask any) { out = appendSensitive(out, v, mask) }
	if p.Config != nil && p.Config.RootModule != nil {
		for name, cv := range p.Config.RootModule.Variables {
			if cv != nil && cv.Sensitive {
				if pv := p.Variables[name]; pv != nil {
					collect(pv.Value, true)
				}
			}
		}
	}
	for _, rcs := range [][]*tfjson.ResourceChange{p.ResourceChanges, p.ResourceDrift} {
		for _, rc := range rcs {
			if rc == nil || rc.Change == nil {
				continue
			}
			collect(rc.Change.Before, rc.Change.BeforeSensitive)
			collect(rc.Change.After, rc.Change.AfterSensitive)
		}
	}
	for _, oc := range p.OutputChanges {
		if oc == nil {
			continue
		}
		collect(oc.Before, oc.BeforeSensitive)
		collect(oc.After, oc.AfterSensitive)
	}
	for _, sv := range []*tfjson.StateValues{p.PlannedValues, stateValues(p.PriorState)} {
		if sv == nil {
			continue
		}
		for _, o := range sv.Outputs {
			if o != nil && o.Sensitive {
				collect(o.Value, true)
			}
		}
		out = moduleSensitive(out, sv.RootModule)
	}
	return out
}

func stateValues(s *tfjson.State) *tfjson.StateValues {
	if s == nil {
		return nil
	}
	return s.Values
}

func moduleSensitive(out []string, m *tfjson.StateModule) []string {
	if m == nil {
		return out
	}
	for _, r := range m.Resources {
		if r == nil || len(r.SensitiveValues) == 0 {
			continue
		}
		var mask any
		if json.Unmarshal(r.SensitiveValues, &mask) == nil {
			out = appendSensitive(out, map[string]any(r.AttributeValues), mask)
		}
	}
	for _, c := range m.ChildModules {
		out = moduleSensitive(out, c)
	}
	return out
}

// appendSensitive appends the parts of v that mask marks: mask true marks
// all of v; a map or list mask marks v's elements key by key.
func appendSensitive(out []string, v, mask any) []string {
	switch m := mask.(type) {
	case bool:
		if m {
			out = appendLeaves(out, v)
		}
	case map[string]any:
		if vm, ok := v.(map[string]any); ok {
			for k, mk := range m {
				out = appendSensitive(out, vm[k], mk)
			}
		}
	case []any:
		if vl, ok := v.([]any); ok {
			for i, mi := range m {
				if i < len(vl) {
					out = appendSensitive(out, vl[i], mi)
				}
			}
		}
	}
	return out
}

// appendLeaves appends every string and number in v, and v itself in JSON
// when it is a collection (jsonencode of a sensitive object).
func appendLeaves(out []string, v any) []string {
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case float64:
		out = append(out, strconv.FormatFloat(x, 'f', -1, 64))
	case json.Number:
		out = append(out, x.String())
	case map[string]any:
		for _, e := range x {
			out = appendLeaves(out, e)
		}
		if b, err := json.Marshal(x); err == nil {
			out = append(out, string(b))
		}
	case []any:
		for _, e := range x {
			out = appendLeaves(out, e)
		}
		if b, err := json.Marshal(x); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}
