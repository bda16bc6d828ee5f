package runner

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ErrPlanConfig means a saved plan carries configuration that is not the
// checked-out commit's: what apply would run is not what was reviewed.
var ErrPlanConfig = errors.New("the saved plan's configuration is not the commit's")

// configFiles are the files of a run's checkout and of the modules init
// fetched, by path relative to the working directory, with their sha256:
// recorded once init has run and before any of the pull request's code can.
type configFiles map[string]string

// recordConfig hashes every file under src (the checkout) and under the
// working directory's .terraform/modules, by path relative to work.
// Provider binaries are not configuration and are left out.
func recordConfig(src, work string) (configFiles, error) {
	files := configFiles{}
	providers := filepath.Join(work, ".terraform", "providers")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p == providers {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, err := filepath.Rel(work, p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return files, err
}

// unchangedByInit checks after, the configuration recorded once terraform
// init has run, against before, the commit's as checked out: every file of
// the commit is unchanged, and init added files only where it makes them
// (.terraform/, and the dependency lock file, which it may also update).
func unchangedByInit(before, after configFiles) error {
	made := func(name string) bool { return name == ".terraform.lock.hcl" || strings.HasPrefix(name, ".terraform/") }
	for name, sum := range before {
		if !made(name) && after[name] != sum {
			return fmt.Errorf("%w: %s changed while terraform init ran", ErrPlanConfig, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok && !made(name) {
			return fmt.Errorf("%w: %s appeared while terraform init ran", ErrPlanConfig, name)
		}
	}
	return nil
}

// checkSnapshot verifies that the configuration a saved plan carries (its
// tfconfig/ snapshot, which is what apply runs) and its dependency lock file
// are exactly the files recorded before the plan: every file of every
// module, no file missing, each module where its source says it is. Code
// that runs beside terraform at plan time can put a plan made from another
// configuration where the saved plan should be; this is where it is caught.
func checkSnapshot(plan []byte, files configFiles) error {
	z, err := zip.NewReader(bytes.NewReader(plan), int64(len(plan)))
	if err != nil {
		return fmt.Errorf("%w: not a saved plan: %w", ErrPlanConfig, err)
	}
	var modules []struct{ Key, Source, Dir string }
	snapshot := map[string]*zip.File{}
	for _, f := range z.File {
		switch {
		case f.Name == "tfconfig/modules.json":
			b, err := readZip(f)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &modules); err != nil {
				return fmt.Errorf("%w: modules.json: %w", ErrPlanConfig, err)
			}
		case strings.HasPrefix(f.Name, "tfconfig/"):
			snapshot[strings.TrimPrefix(f.Name, "tfconfig/")] = f
		case f.Name == ".terraform.lock.hcl":
			if err := sameLock(f, files); err != nil {
				return err
			}
		}
	}
	dirs := map[string]string{} // module key → directory, relative to work
	for _, m := range modules {
		dir := path.Clean(m.Dir)
		switch parent, _ := parentKey(m.Key); {
		case m.Key == "":
			if dir != "." {
				return fmt.Errorf("%w: the root module is at %q", ErrPlanConfig, m.Dir)
			}
		case strings.HasPrefix(m.Source, "./") || strings.HasPrefix(m.Source, "../"):
			pd, ok := dirs[parent]
			if !ok || dir != path.Clean(path.Join(pd, m.Source)) {
				return fmt.Errorf("%w: module %s (%s) is at %q", ErrPlanConfig, m.Key, m.Source, m.Dir)
			}
		default: // fetched by init
			if dir != ".terraform/modules/"+m.Key && !strings.HasPrefix(dir, ".terraform/modules/"+m.Key+"/") {
				return fmt.Errorf("%w: module %s (%s) is at %q", ErrPlanConfig, m.Key, m.Source, m.Dir)
			}
		}
		dirs[m.Key] = dir
	}
	if _, ok := dirs[""]; !ok {
		return fmt.Errorf("%w: no root module", ErrPlanConfig)
	}
	seen := map[string]bool{}
	for name, f := range snapshot {
		dirName, rel, ok := strings.Cut(name, "/")
		key, isModule := strings.CutPrefix(dirName, "m-")
		dir, known := dirs[key]
		if !ok || !isModule || !known {
			return fmt.Errorf("%w: unexpected %s", ErrPlanConfig, f.Name)
		}
		p := path.Clean(path.Join(dir, rel))
		if err := sameFile(f, files, p); err != nil {
			return err
		}
		seen[p] = true
	}
	// Nothing left out: every configuration file of every module is there.
	for _, dir := range dirs {
		for p := range files {
			if path.Dir(p) == dir && isConfig(p) && !seen[p] {
				return fmt.Errorf("%w: %s is missing from it", ErrPlanConfig, p)
			}
		}
	}
	return nil
}

func parentKey(key string) (string, bool) {
	i := strings.LastIndex(key, ".")
	if i < 0 {
		return "", key != ""
	}
	return key[:i], true
}

func isConfig(p string) bool {
	return slices.ContainsFunc([]string{".tf", ".tf.json"}, func(ext string) bool { return strings.HasSuffix(p, ext) })
}

func sameFile(f *zip.File, files configFiles, p string) error {
	b, err := readZip(f)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	if want, ok := files[p]; !ok || want != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("%w: %s differs from the checked-out file", ErrPlanConfig, p)
	}
	return nil
}

// sameLock checks the plan's dependency lock file: the one init left, or,
// where init needed no provider and wrote none, one that selects none.
func sameLock(f *zip.File, files configFiles) error {
	if _, ok := files[".terraform.lock.hcl"]; ok {
		return sameFile(f, files, ".terraform.lock.hcl")
	}
	b, err := readZip(f)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return fmt.Errorf("%w: it selects providers the checkout's init did not", ErrPlanConfig)
		}
	}
	return nil
}

func readZip(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPlanConfig, f.Name, err)
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, maxPlanFile))
}
