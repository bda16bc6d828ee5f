package main

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/twokey/twokey"

// TestImportGraph keeps the layout the README describes: pure packages in
// the middle, each technology behind the one adapter named for it, and
// dependencies flowing commands ← approvals ← runner ← change ← bot ← cmd,
// and no demo in the production binary.
func TestImportGraph(t *testing.T) {
	// The production build: no build tags, whatever GOFLAGS says.
	out, err := exec.Command("go", "list", "-tags=", "-json=ImportPath,Imports,Deps", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports, deps := map[string][]string{}, map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		imports[name], deps[name] = p.Imports, p.Deps
	}
	if len(imports) < 10 {
		t.Fatalf("only %d packages listed", len(imports))
	}

	// Third-party libraries and the packages that may import them: a
	// package path, or "path/..." for it and everything below it.
	libraries := map[string][]string{
		"github.com/slack-go/slack":           {"bot"},
		"github.com/redis/go-redis":           {"runner/redislock", "runner/redisplans", "runner/redisjobs", "approvals/redisstore", "audit/redisaudit", "cmd/twokey"},
		"github.com/hashicorp/terraform-exec": {"runner"},
		"github.com/hashicorp/terraform-json": {"runner", "policy"},
		// Plan policies, evaluated in-process; only the policy engine.
		"github.com/open-policy-agent/opa": {"policy"},
		"github.com/hashicorp/go-version":  {"runner"},
		"github.com/hashicorp/vault/api":   {"runner/vaultcreds", "devstack"},
		"github.com/google/go-github":      {"runner/ghsource", "ghlink"},
		"github.com/gorilla/websocket":     {"bot/slacksim"},
		"gopkg.in/yaml.v3":                 {"config", "devstack"},
		// The demo's embedded Redis-compatible store; tests use it too.
		"github.com/alicebob/miniredis": {"devstack"},
		// One errgroup per process owns its goroutines.
		"golang.org/x/sync/errgroup": {"cmd/twokey"},
		// Metrics: only the Prometheus adapter speaks Prometheus.
		"github.com/prometheus/client_golang": {"promstats"},
		// Drift schedules: cron syntax, parsed and validated with the config.
		"github.com/robfig/cron/v3": {"config"},
		// GitHub's OAuth device flow, for linking accounts; only ghlink.
		"golang.org/x/oauth2": {"ghlink"},
		// GitHub App installation tokens; only the GitHub adapter.
		"github.com/bradleyfalzon/ghinstallation": {"runner/ghsource"},
		// prctl: twokey's processes make themselves non-dumpable.
		"golang.org/x/sys/unix": {"cmd/twokey"},
		// The hostile pull request's provider, test equipment only.
		"github.com/hashicorp/terraform-plugin-framework": {"devstack/lootprovider"},
		// The Kubernetes API types and client-go's scheme, heavy: only the
		// Helm chart's test (deploy/helm, no other code) decodes rendered
		// manifests with them.
		"k8s.io":           {"deploy/helm"},
		"sigs.k8s.io/yaml": {"deploy/helm"},
	}
	// Project packages each package may not import.
	forbidden := map[string][]string{
		"ref":       {"commands", "approvals", "audit", "runner", "bot", "config", "cmd", "devstack", "change", "attest"},
		"attest":    {"commands", "approvals", "audit", "runner", "bot", "config", "cmd", "devstack"},
		"commands":  {"approvals", "runner", "bot", "config", "cmd", "devstack"},
		"approvals": {"runner", "bot", "config", "cmd", "devstack", "commands", "audit"},
		"audit":     {"approvals", "runner", "bot", "config", "cmd", "devstack", "commands"},
		"config":    {"approvals", "runner", "bot", "cmd", "commands", "devstack"},
		"runner":    {"bot", "cmd", "commands", "devstack", "change", "ghsync"},
		"change":    {"bot", "cmd", "devstack", "ghsync"},
		"ghsync":    {"bot", "cmd", "devstack"},
		"policy":    {"runner", "change", "bot", "ghsync", "config", "cmd", "devstack"},
		"bot":       {"cmd", "devstack", "ghsync"},
	}

	for pkg, imps := range imports {
		for _, imp := range imps {
			if within, ok := strings.CutPrefix(imp, module+"/"); ok {
				for _, f := range forbidden[top(pkg)] {
					if within == f || strings.HasPrefix(within, f+"/") {
						t.Errorf("%s imports %s: dependencies flow commands ← approvals ← runner ← change ← bot ← cmd", pkg, within)
					}
				}
				continue
			}
			if !strings.Contains(strings.Split(imp, "/")[0], ".") {
				continue // standard library
			}
			allowed, known := allowedFor(libraries, imp)
			if !known {
				t.Errorf("%s imports %s, which is not in the list of libraries the layout allows", pkg, imp)
				continue
			}
			if !under(pkg, allowed) {
				t.Errorf("%s imports %s; only %v may", pkg, imp, allowed)
			}
		}
	}
	// cmd/twokey reads the config and hands adapters narrow options, and
	// credentials are config/secret's type; the change service decides on
	// the environments the config describes, so it alone of the rest may
	// import config's types (and the demo, which writes a config).
	for pkg, imps := range imports {
		if strings.HasSuffix(pkg, "_test") || slices.Contains([]string{"change", "cmd", "config", "devstack"}, top(pkg)) {
			continue
		}
		if slices.Contains(imps, module+"/config") {
			t.Errorf("%s imports config: only cmd/twokey reads the config; give %s narrow options (secrets: config/secret)", pkg, pkg)
		}
	}
	// Banned dependencies, direct or not, each with its reason (Tailscale's
	// tstest/deptest).
	const production = "the production binary (serve, runner, the image) carries no demo and no simulators; only -tags demo links them"
	banned := []struct{ pkg, dep, why string }{
		{"cmd/twokey", "github.com/alicebob/miniredis", production},
		{"cmd/twokey", module + "/bot/slacksim", production},
		{"cmd/twokey", module + "/runner/ghsim", production},
		{"cmd/twokey", module + "/devstack", production},
		{"cmd/twokey", module + "/devstack/lootprovider", production},
		{"cmd/twokey", "github.com/hashicorp/terraform-plugin-framework", production},
		{"change", "github.com/slack-go/slack", "the use cases are front-end free; bot is the Slack adapter"},
		{"change", "github.com/redis/go-redis", "the service talks to stores through its own small interfaces"},
		{"change", "github.com/hashicorp/vault/api", "credentials are the runner's adapters' business"},
		{"change", "github.com/google/go-github", "GitHub feedback is ghsync's, driven by the service's events"},
		{"ghsync", "github.com/slack-go/slack", "GitHub feedback does not depend on the front end"},
		{"bot", "github.com/redis/go-redis", "bot is transport and rendering; state is the service's"},
		{"bot", "github.com/hashicorp/vault/api", "bot is transport and rendering; credentials are the runner's"},
		{"bot", "github.com/google/go-github", "bot is transport and rendering; GitHub is ghsync's and ghsource's"},
		{"runner/redisjobs", module + "/bot", "a runner worker learns where terraform runs from cmd, not from the Slack adapter"},
		{"runner/redisjobs", "github.com/slack-go/slack", "runner workers hold no Slack token and speak no Slack"},
	}
	for _, b := range banned {
		if _, ok := deps[b.pkg]; !ok {
			t.Errorf("banned-dependency rule for %s: no such package", b.pkg)
		}
		if d, ok := dependsOn(deps[b.pkg], b.dep); ok {
			t.Errorf("%s depends on %s, which is banned: %s", b.pkg, d, b.why)
		}
	}
	// The build tag is what keeps the demo out: with -tags demo, cmd/twokey
	// links it. If it did not, the production rules above would prove
	// nothing.
	out, err = exec.Command("go", "list", "-tags=demo", "-deps", module+"/cmd/twokey").Output()
	if err != nil {
		t.Fatalf("go list -tags=demo: %v", err)
	}
	demoDeps := strings.Fields(string(out))
	for _, dep := range []string{module + "/devstack", module + "/bot/slacksim", module + "/runner/ghsim", "github.com/alicebob/miniredis"} {
		if _, ok := dependsOn(demoDeps, dep); !ok {
			t.Errorf("cmd/twokey with -tags demo does not depend on %s: `twokey demo` runs the demo world, and only the tag keeps it out of production", dep)
		}
	}

	for _, pure := range []string{"commands", "approvals", "audit", "attest"} {
		for _, imp := range imports[pure] {
			// Project packages are governed by forbidden above; attest,
			// which they may use, is pure itself.
			if strings.Contains(strings.Split(imp, "/")[0], ".") && !strings.HasPrefix(imp, module+"/") {
				t.Errorf("%s must stay pure but imports %s", pure, imp)
			}
		}
	}
}

// dependsOn reports the first of deps that is dep or a package below it.
func dependsOn(deps []string, dep string) (string, bool) {
	for _, d := range deps {
		if d == dep || strings.HasPrefix(d, dep+"/") {
			return d, true
		}
	}
	return "", false
}

func allowedFor(libraries map[string][]string, imp string) ([]string, bool) {
	for lib, pkgs := range libraries {
		if imp == lib || strings.HasPrefix(imp, lib+"/") {
			return pkgs, true
		}
	}
	return nil, false
}

func top(pkg string) string { return strings.Split(pkg, "/")[0] }

func under(pkg string, allowed []string) bool {
	for _, a := range allowed {
		if tree, ok := strings.CutSuffix(a, "/..."); ok && (pkg == tree || strings.HasPrefix(pkg, tree+"/")) {
			return true
		}
		if pkg == a {
			return true
		}
	}
	return false
}
