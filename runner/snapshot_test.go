package runner

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func planZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	for name, content := range files {
		w, err := z.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func hashes(files map[string]string) configFiles {
	c := configFiles{}
	for p, content := range files {
		sum := sha256.Sum256([]byte(content))
		c[p] = hex.EncodeToString(sum[:])
	}
	return c
}

// Every way a saved plan's configuration can differ from the commit's is
// refused; the commit's own is accepted.
func TestCheckSnapshot(t *testing.T) {
	checkout := hashes(map[string]string{
		"main.tf": "root", "vars.tf": "vars", "README.md": "docs",
		"../modules/net/net.tf":         "net",
		".terraform/modules/vpc/vpc.tf": "vpc",
		".terraform.lock.hcl":           "lock",
		".terraform/terraform.tfstate":  "backend",
		"../other/unrelated.tf":         "other",
	})
	modules := `[{"Key":"","Dir":"."},{"Key":"net","Source":"../modules/net","Dir":"../modules/net"},` +
		`{"Key":"vpc","Source":"registry.example/acme/vpc/aws","Dir":".terraform/modules/vpc"}]`
	good := map[string]string{
		"tfplan": "changes", "tfconfig/modules.json": modules,
		"tfconfig/m-/main.tf": "root", "tfconfig/m-/vars.tf": "vars",
		"tfconfig/m-net/net.tf": "net", "tfconfig/m-vpc/vpc.tf": "vpc",
		".terraform.lock.hcl": "lock",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	if err := checkSnapshot(planZip(t, good), checkout); err != nil {
		t.Fatalf("the commit's own plan: %v", err)
	}
	// Built-in providers only: init writes no lock file, the plan an empty one.
	noLock := configFiles{}
	for k, v := range checkout {
		if k != ".terraform.lock.hcl" {
			noLock[k] = v
		}
	}
	empty := "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n"
	if err := checkSnapshot(planZip(t, with(".terraform.lock.hcl", empty)), noLock); err != nil {
		t.Fatalf("no providers: %v", err)
	}
	if err := checkSnapshot(planZip(t, good), noLock); !errors.Is(err, ErrPlanConfig) {
		t.Fatalf("a lock file selecting providers init did not select: %v", err)
	}
	for name, files := range map[string]map[string]string{
		"a changed root file":      with("tfconfig/m-/main.tf", "provisioner"),
		"an added file":            with("tfconfig/m-/extra.tf", "hidden"),
		"a file left out":          with("tfconfig/m-/vars.tf", ""),
		"a changed module":         with("tfconfig/m-net/net.tf", "evil"),
		"a changed lock file":      with(".terraform.lock.hcl", "other providers"),
		"a module moved":           with("tfconfig/modules.json", `[{"Key":"","Dir":"."},{"Key":"net","Source":"../modules/net","Dir":"../other"},{"Key":"vpc","Source":"x","Dir":".terraform/modules/vpc"}]`),
		"the root moved":           with("tfconfig/modules.json", `[{"Key":"","Dir":"../other"}]`),
		"a remote module in place": with("tfconfig/modules.json", `[{"Key":"","Dir":"."},{"Key":"net","Source":"../modules/net","Dir":"../modules/net"},{"Key":"vpc","Source":"x","Dir":"../modules/net"}]`),
		"not a plan":               nil,
	} {
		data := []byte("not a zip")
		if files != nil {
			data = planZip(t, files)
		}
		if err := checkSnapshot(data, checkout); !errors.Is(err, ErrPlanConfig) {
			t.Errorf("%s: err = %v, want ErrPlanConfig", name, err)
		}
	}
}

// What init may do to the run's directory: add .terraform/ and the lock
// file, or update the lock file. Anything else to the commit's files is
// refused, naming the file.
func TestUnchangedByInit(t *testing.T) {
	commit := configFiles{"main.tf": "a", "../modules/x/x.tf": "b", ".terraform.lock.hcl": "c"}
	with := func(change func(configFiles)) configFiles {
		after := configFiles{}
		for k, v := range commit {
			after[k] = v
		}
		change(after)
		return after
	}
	for _, c := range []struct {
		name   string
		change func(configFiles)
		refuse string
	}{
		{"nothing", func(configFiles) {}, ""},
		{"modules and providers", func(f configFiles) {
			f[".terraform/modules/m/main.tf"] = "d"
			f[".terraform/modules/modules.json"] = "e"
		}, ""},
		{"lock file updated", func(f configFiles) { f[".terraform.lock.hcl"] = "z" }, ""},
		{"a file changed", func(f configFiles) { f["main.tf"] = "z" }, "main.tf changed"},
		{"a file outside the directory changed", func(f configFiles) { f["../modules/x/x.tf"] = "z" }, "../modules/x/x.tf changed"},
		{"a file removed", func(f configFiles) { delete(f, "main.tf") }, "main.tf changed"},
		{"a file added", func(f configFiles) { f["evil.tf"] = "z" }, "evil.tf appeared"},
		{"a file added beside .terraform", func(f configFiles) { f[".terraformx/a.tf"] = "z" }, ".terraformx/a.tf appeared"},
	} {
		err := unchangedByInit(commit, with(c.change))
		switch {
		case c.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.refuse != "" && (!errors.Is(err, ErrPlanConfig) || !strings.Contains(err.Error(), c.refuse)):
			t.Errorf("%s: %v; want %q", c.name, err, c.refuse)
		}
	}
}
