// Package policy checks a Terraform plan before anyone is asked to approve
// it: the environment's Rego policies, evaluated in-process with OPA, and
// built-in risk flags that need no policy at all.
//
// Policies are conftest-compatible: every .rego file under the directory
// (tests, *_test.rego, left out), any package, input is the plan JSON of
// `terraform show -json`. Rules named deny, violation, warn, or starting
// with deny_, violation_, warn_, give a set of messages (strings, or
// objects with a "msg"). Two more rules raise the bar for approving:
//
//	required_approvals  a number, or {"approvals": n, "msg": why}, or a set of either
//	required_groups     a group name, or {"group": g, "msg": why}, or a set of either
//
// Rego v1 syntax is read first; a file that only parses as Rego v0 (older
// conftest policies) is read as v0.
package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/twokey/twokey/approvals"
)

// ErrPolicy means the policies could not be loaded or evaluated.
var ErrPolicy = errors.New("policy check failed")

// Engine evaluates plans against policy directories, compiling each
// directory once and again only when its files change.
type Engine struct {
	mu   sync.Mutex
	sets map[string]*Set
}

// New returns an Engine.
func New() *Engine { return &Engine{sets: map[string]*Set{}} }

// Check assesses plan: the built-in risks always, and the policies in dir
// when dir is not "". It never reads or returns values the plan marks
// sensitive itself, but a policy's message can quote any value: callers
// redact messages as they redact any other text.
func (e *Engine) Check(ctx context.Context, dir string, plan *tfjson.Plan) (approvals.Assessment, error) {
	a := approvals.Assessment{Risks: Risks(plan)}
	if dir == "" {
		return a, nil
	}
	set, err := e.set(dir)
	if err != nil {
		return a, err
	}
	input, err := Input(plan)
	if err != nil {
		return a, err
	}
	r, err := set.Eval(ctx, input)
	if err != nil {
		return a, err
	}
	r.Risks = a.Risks
	return r, nil
}

// set returns dir's compiled policies, recompiling when a file changed.
func (e *Engine) set(dir string) (*Set, error) {
	files, stamp, err := scan(dir)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.sets[dir]; ok && s.stamp == stamp {
		return s, nil
	}
	s, err := compile(files)
	if err != nil {
		return nil, err
	}
	s.stamp = stamp
	e.sets[dir] = s
	return s, nil
}

// Input turns a plan into OPA's input value: the plan JSON.
func Input(plan *tfjson.Plan) (ast.Value, error) {
	b, err := json.Marshal(plan)
	if err != nil {
		return nil, fmt.Errorf("%w: plan JSON: %w", ErrPolicy, err)
	}
	return InputJSON(b)
}

// InputJSON turns plan JSON (as `terraform show -json` prints it) into
// OPA's input value.
func InputJSON(b []byte) (ast.Value, error) {
	v, err := ast.ValueFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: plan JSON: %w", ErrPolicy, err)
	}
	return v, nil
}

// Set is a directory's policies, compiled.
type Set struct {
	query rego.PreparedEvalQuery
	rules []ruleRef // what each query variable holds
	stamp string
}

type ruleRef struct {
	pkg, name string // "twokey.network", "deny"
	kind      string // deny, warn, required_approvals, required_groups
}

// scan lists the policy files under dir and a stamp that changes when any
// of them does.
func scan(dir string) ([]string, string, error) {
	var files []string
	var stamp strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, "_test.rego") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, p)
		fmt.Fprintf(&stamp, "%s\x00%d\x00%d\n", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return files, stamp.String(), nil
}

// Load compiles the policies under dir.
func Load(dir string) (*Set, error) {
	files, _, err := scan(dir)
	if err != nil {
		return nil, err
	}
	return compile(files)
}

func compile(files []string) (*Set, error) {
	opts := []func(*rego.Rego){}
	var errs []error
	var rules []ruleRef
	seen := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m, err := parse(f, string(src))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		opts = append(opts, rego.ParsedModule(m))
		pkg := strings.TrimPrefix(m.Package.Path.String(), "data.")
		for _, r := range m.Rules {
			name := r.Head.Ref()[0].Value.String()
			kind := ruleKind(name)
			if kind == "" || seen[pkg+"."+name] {
				continue
			}
			seen[pkg+"."+name] = true
			rules = append(rules, ruleRef{pkg: pkg, name: name, kind: kind})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	sort.Slice(rules, func(i, j int) bool {
		return rules[i].pkg+"."+rules[i].name < rules[j].pkg+"."+rules[j].name
	})
	// One query for every rule: each wrapped in a set comprehension, so a
	// rule that is undefined gives an empty set instead of no result.
	var q []string
	for i, r := range rules {
		ref := ast.MustParseRef("data." + r.pkg).Append(ast.StringTerm(r.name))
		q = append(q, fmt.Sprintf("x%d = {v | v = %s}", i, ref))
	}
	if len(q) == 0 {
		q = []string{"true"}
	}
	opts = append(opts, rego.Query(strings.Join(q, "; ")), rego.StrictBuiltinErrors(true))
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return &Set{query: pq, rules: rules}, nil
}

// parse reads a module as Rego v1, or, failing that, as Rego v0.
func parse(name, src string) (*ast.Module, error) {
	m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err == nil {
		return m, nil
	}
	if m0, err0 := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV0}); err0 == nil {
		return m0, nil
	}
	return nil, err
}

func ruleKind(name string) string {
	for _, k := range []string{"deny", "violation", "warn"} {
		if name == k || strings.HasPrefix(name, k+"_") {
			if k == "violation" {
				return "deny"
			}
			return k
		}
	}
	if name == "required_approvals" || name == "required_groups" {
		return name
	}
	return ""
}

// Eval evaluates the set against input (see Input).
func (s *Set) Eval(ctx context.Context, input ast.Value) (approvals.Assessment, error) {
	a := approvals.Assessment{Checked: true}
	if len(s.rules) == 0 {
		return a, nil
	}
	rs, err := s.query.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return a, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	if len(rs) != 1 {
		return a, fmt.Errorf("%w: %d results", ErrPolicy, len(rs))
	}
	for i, r := range s.rules {
		vals, _ := rs[0].Bindings[fmt.Sprintf("x%d", i)].([]any)
		for _, v := range vals {
			add(&a, r, v)
		}
	}
	finish(&a)
	return a, nil
}

// add folds one rule's value into a: a set or array is each of its members.
func add(a *approvals.Assessment, r ruleRef, v any) {
	if vs, ok := v.([]any); ok {
		for _, v := range vs {
			add(a, r, v)
		}
		return
	}
	rule := r.pkg + "." + r.name
	switch r.kind {
	case "deny":
		a.Denied = append(a.Denied, approvals.Finding{Rule: rule, Message: message(v)})
	case "warn":
		a.Warnings = append(a.Warnings, approvals.Finding{Rule: rule, Message: message(v)})
	case "required_approvals":
		n, why := v, ""
		if o, ok := v.(map[string]any); ok {
			n, why = o["approvals"], text(o, "msg", "reason")
		}
		k, ok := number(n)
		if !ok || k < 1 {
			a.Denied = append(a.Denied, approvals.Finding{Rule: rule, Message: fmt.Sprintf("not a number of approvals: %s", message(v))})
			return
		}
		if k > a.Required {
			a.Required = k
		}
		if why == "" {
			why = fmt.Sprintf("%d approvals", k)
		}
		a.Reasons = append(a.Reasons, fmt.Sprintf("%s: %s", rule, why))
	case "required_groups":
		g, why := "", ""
		switch o := v.(type) {
		case string:
			g = o
		case map[string]any:
			g, why = text(o, "group"), text(o, "msg", "reason")
		}
		if g == "" {
			a.Denied = append(a.Denied, approvals.Finding{Rule: rule, Message: fmt.Sprintf("not a group: %s", message(v))})
			return
		}
		a.Groups = append(a.Groups, approvals.GroupRequirement{Group: g, Reason: why})
		if why != "" {
			a.Reasons = append(a.Reasons, fmt.Sprintf("%s: %s", rule, why))
		}
	}
}

// finish sorts the findings, so the same plan reads the same every time,
// and drops duplicates.
func finish(a *approvals.Assessment) {
	cmp := func(x, y approvals.Finding) int {
		return strings.Compare(x.Rule+"\x00"+x.Message, y.Rule+"\x00"+y.Message)
	}
	slices.SortFunc(a.Denied, cmp)
	a.Denied = slices.Compact(a.Denied)
	slices.SortFunc(a.Warnings, cmp)
	a.Warnings = slices.Compact(a.Warnings)
	slices.SortFunc(a.Groups, func(x, y approvals.GroupRequirement) int {
		return strings.Compare(x.Group+"\x00"+x.Reason, y.Group+"\x00"+y.Reason)
	})
	a.Groups = slices.CompactFunc(a.Groups, func(x, y approvals.GroupRequirement) bool { return x.Group == y.Group })
	slices.Sort(a.Reasons)
	a.Reasons = slices.Compact(a.Reasons)
}

// message is a deny or warn value as conftest reads it: a string, or an
// object's "msg".
func message(v any) string {
	switch o := v.(type) {
	case string:
		return o
	case map[string]any:
		if m := text(o, "msg"); m != "" {
			return m
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func text(o map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := o[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

func number(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), n == float64(int(n))
	case int:
		return n, true
	}
	return 0, false
}
