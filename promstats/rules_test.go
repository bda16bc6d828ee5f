package promstats

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// deploy/prometheus/rules.yaml parses strictly as Prometheus rule groups,
// has the groups the README describes, and names only metrics twokey
// exports.
func TestExampleRules(t *testing.T) {
	b, err := os.ReadFile("../deploy/prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	var groups []string
	alerts := map[string]bool{}
	metric := regexp.MustCompile(`\btwokey_[a-z_]+`)
	duration := regexp.MustCompile(`^[0-9]+[smh]$`)
	for _, g := range f.Groups {
		groups = append(groups, g.Name)
		if len(g.Rules) == 0 {
			t.Errorf("group %s has no rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: rule %q needs alert, expr and a summary", g.Name, r.Alert)
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s twice", r.Alert)
			}
			alerts[r.Alert] = true
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
			if r.For != "" && !duration.MatchString(r.For) {
				t.Errorf("%s: for %q", r.Alert, r.For)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("%s: unbalanced parentheses in %s", r.Alert, r.Expr)
			}
			names := metric.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s names no twokey metric", r.Alert)
			}
			for _, n := range names {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
				if !slices.Contains(Names, base) {
					t.Errorf("%s: %s is not a twokey metric", r.Alert, n)
				}
			}
		}
	}
	want := []string{"twokey.availability", "twokey.changes", "twokey.dependencies", "twokey.queues"}
	if !slices.Equal(groups, want) {
		t.Errorf("groups = %v, want %v", groups, want)
	}
}
