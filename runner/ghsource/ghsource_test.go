package ghsource

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsim"
)

type fixture struct {
	gh   *ghsim.Server
	repo *devstack.GitRepo
	src  *Source
	v1   string // PR 42's first head
}

func setup(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	repo, err := devstack.NewGitRepo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base, err := repo.Commit(ctx, "main", "", "init", map[string]*string{"main.tf": devstack.Str("# v0\n")})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := repo.Commit(ctx, "feature", base, "v1", map[string]*string{
		"main.tf": devstack.Str("# v1\n"), "modules/a/a.tf": devstack.Str("# a\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.PublishPull(ctx, 42, v1); err != nil {
		t.Fatal(err)
	}
	gh := ghsim.New()
	gh.Token = "ghs_test_token_0123456789abcdef"
	gh.AddRepo("acme/infra", repo.CloneURL())
	gh.SetPull("acme/infra", ghsim.Pull{Number: 42, HeadSHA: v1, HeadRef: "feature", Title: "Add a"})
	gh.SetPull("acme/infra", ghsim.Pull{Number: 7, HeadSHA: v1, State: "closed"})
	gh.SetPull("acme/infra", ghsim.Pull{Number: 8, HeadSHA: v1, State: "closed", Merged: true})
	srv := httptest.NewServer(gh)
	t.Cleanup(srv.Close)
	src, err := New(Options{APIURL: srv.URL + "/api/v3/", Token: config.Secret(gh.Token), MirrorDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{gh: gh, repo: repo, src: src, v1: v1}
}

// checkedOut resolves pull request 42 and checks it out once, so that
// f's mirror has its head.
func (f fixture) checkedOut(t *testing.T) runner.Revision {
	t.Helper()
	ctx := context.Background()
	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
		t.Fatal(err)
	}
	return rev
}

// ended is what done gives, or fails the test with hung if it gives
// nothing within 10 s.
func ended(t *testing.T, done <-chan error, hung string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal(hung)
		return nil
	}
}

// loggedGit is a git that logs each command line to calls, then runs it.
func loggedGit(t *testing.T) (wrapper, calls string) {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls, wrapper = filepath.Join(dir, "calls"), filepath.Join(dir, "git")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$*\" >> "+calls+"\nexec "+gitPath+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, calls
}

func TestResolve(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	if rev.SHA != f.v1 || rev.CloneURL != f.repo.CloneURL() || rev.PR != 42 || rev.Title != "Add a" {
		t.Fatalf("rev = %+v", rev)
	}
	for _, tt := range []struct {
		pr   int
		want error
	}{{7, runner.ErrPRClosed}, {8, runner.ErrPRClosed}, {999, runner.ErrPRNotFound}} {
		if _, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: tt.pr}); !errors.Is(err, tt.want) {
			t.Errorf("PR %d: err = %v, want %v", tt.pr, err, tt.want)
		}
	}
	if _, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 8}); !strings.Contains(err.Error(), "merged") {
		t.Errorf("merged PR error does not say merged: %v", err)
	}
	f.gh.Fail(10)
	if _, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42}); !errors.Is(err, runner.ErrSource) {
		t.Errorf("GitHub down: err = %v, want ErrSource", err)
	}
	for _, r := range f.gh.Requests() {
		if r.Auth != "Bearer "+f.gh.Token {
			t.Fatalf("request %s without the token", r.Path)
		}
	}
}

func TestCheckoutExactCommit(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	// The PR moves on after it was resolved: the checkout still gets v1.
	v2, err := f.repo.Commit(ctx, "feature", f.v1, "v2", map[string]*string{"main.tf": devstack.Str("# v2\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 42, v2); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := f.src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != "# v1\n" {
		t.Fatalf("main.tf = %q, want v1", b)
	}
	if _, err := os.Stat(filepath.Join(dst, "modules", "a", "a.tf")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, ".git")); !os.IsNotExist(err) {
		t.Fatal("workspace contains .git")
	}
	// And the new head checks out from the same mirror.
	dst2 := filepath.Join(t.TempDir(), "src")
	if err := f.src.Checkout(ctx, runner.Revision{Repo: "acme/infra", PR: 42, SHA: v2, CloneURL: f.repo.CloneURL()}, dst2); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst2, "main.tf")); string(b) != "# v2\n" {
		t.Fatalf("main.tf = %q, want v2", b)
	}
	bogus := runner.Revision{Repo: "acme/infra", PR: 42, SHA: strings.Repeat("0", 40), CloneURL: f.repo.CloneURL()}
	x := filepath.Join(t.TempDir(), "x")
	if err := f.src.Checkout(ctx, bogus, x); !errors.Is(err, runner.ErrSource) {
		t.Fatalf("unknown commit: err = %v", err)
	}
	if _, err := os.Stat(x); !os.IsNotExist(err) {
		t.Fatalf("a failed checkout left its workspace: %v", err)
	}
}

// A pull request's .gitattributes cannot make the checkout differ from its
// commit: files it marks export-ignore are there, and no attribute rewrites
// a file's bytes (export-subst, which can quote the mirror's refs; ident;
// line endings; encodings).
func TestCheckoutIgnoresAttributes(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	main := "# $Format:%H %d$ $Id$\nresource \"terraform_data\" \"a\" {}\n"
	sha, err := f.repo.Commit(ctx, "feature", f.v1, "attributes", map[string]*string{
		".gitattributes": devstack.Str("main.tf export-subst ident text eol=crlf\nhidden.tf export-ignore\n"),
		"main.tf":        devstack.Str(main),
		"hidden.tf":      devstack.Str("# reviewers see this\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 42, sha); err != nil {
		t.Fatal(err)
	}
	rev := runner.Revision{Repo: "acme/infra", PR: 42, SHA: sha, CloneURL: f.repo.CloneURL()}
	// Twice: through a fetch, and from the mirror.
	for i := range 2 {
		dst := filepath.Join(t.TempDir(), "src")
		if err := f.src.Checkout(ctx, rev, dst); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != main {
			t.Errorf("checkout %d: main.tf = %q, want the commit's %q", i, b, main)
		}
		if _, err := os.Stat(filepath.Join(dst, "hidden.tf")); err != nil {
			t.Errorf("checkout %d: %v", i, err)
		}
	}
}

// A commit the mirror has checks out while another checkout fetches (holds
// the mirror): ten environments' plans of one pull request do not queue.
func TestCheckoutDoesNotWaitForFetch(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rev := f.checkedOut(t)
	m := f.src.mirrorOf("acme/infra")
	m.mu.Lock() // a fetch, taking its time
	defer m.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")) }()
	if err := ended(t, done, "the checkout of a commit the mirror has waited for the fetch"); err != nil {
		t.Fatal(err)
	}
}

// A checkout of a commit being prefetched waits for the commit to be
// fetched, not for what the prefetch does with the mirror afterwards (git's
// gc).
func TestCheckoutWaitsForThePrefetchedCommitOnly(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rev := runner.Revision{Repo: "acme/infra", PR: 42, SHA: f.v1, CloneURL: f.repo.CloneURL()}
	m := f.src.mirrorOf("acme/infra")
	m.mu.Lock()
	if err := f.src.setUp(ctx, rev, m); err != nil {
		t.Fatal(err)
	}
	end := f.src.prefetching(m, rev.SHA)
	done := make(chan error, 1)
	go func() { done <- f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")) }()
	// The prefetch fetches, ends, and keeps the mirror (its gc, taking its time).
	if err := f.src.fetch(ctx, rev, m.path); err != nil {
		t.Fatal(err)
	}
	end()
	defer m.mu.Unlock()
	if err := ended(t, done, "the checkout waited for the mirror, not for the commit"); err != nil {
		t.Fatal(err)
	}
}

// A prefetch of a head the mirror has, on a loose or a packed ref, fetches
// nothing; one prefetch at a time per commit.
func TestPrefetchSkipsKnownHeads(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	wrapper, calls := loggedGit(t)
	src, err := New(Options{APIURL: f.src.o.APIURL, Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	m := src.mirrorOf("acme/infra")
	fetches := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), " fetch ")
	}
	settle := func() {
		for deadline := time.Now().Add(10 * time.Second); src.prefetched(m, f.v1) != nil; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the prefetch did not end")
			}
		}
		m.mu.Lock() // and its gc
		m.mu.Unlock()
	}
	if end := src.prefetching(m, "0000000000000000000000000000000000000000"); end == nil {
		t.Fatal("no prefetch under way, and none could start")
	} else if src.prefetching(m, "0000000000000000000000000000000000000000") != nil {
		t.Error("a second prefetch of a commit being prefetched could start")
	} else {
		end()
	}
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	settle()
	if n := fetches(); n != 1 {
		t.Fatalf("five resolves of one head fetched %d times, want 1", n)
	}
	for _, packed := range []bool{false, true} {
		if packed {
			if out, err := exec.Command("git", "-C", m.path, "pack-refs", "--all").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if _, err := os.Stat(filepath.Join(m.path, "refs", "pull", "42", "head")); !os.IsNotExist(err) {
				t.Fatalf("the ref is still loose: %v", err)
			}
		}
		if _, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42}); err != nil {
			t.Fatal(err)
		}
		settle()
		if n := fetches(); n != 1 {
			t.Errorf("packed %v: a known head was fetched again (%d fetches)", packed, n)
		}
	}
}

// A pull request's head force-pushed to a commit that does not descend
// from the one the mirror has is fetched onto its ref all the same.
func TestForcePushedHeadIsFetched(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.checkedOut(t)
	base, err := gitRevParse(t, f.repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	rewritten, err := f.repo.Commit(ctx, "rewritten", base, "v1, rewritten", map[string]*string{"main.tf": devstack.Str("# rewritten\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 42, rewritten); err != nil {
		t.Fatal(err)
	}
	m := f.src.mirrorOf("acme/infra")
	m.mu.Lock()
	err = f.src.fetch(ctx, runner.Revision{Repo: "acme/infra", PR: 42, SHA: rewritten, CloneURL: f.repo.CloneURL()}, m.path)
	m.mu.Unlock()
	if err != nil {
		t.Fatalf("fetch of a force-pushed head: %v", err)
	}
	if !hasRef(m, runner.Revision{PR: 42, SHA: rewritten}) {
		t.Fatal("the mirror's ref was not moved to the force-pushed head")
	}
}

func TestUntarRefusesEscapes(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
	}{
		{"dotdot", tar.Header{Name: "../evil.tf", Typeflag: tar.TypeReg, Mode: 0o644}},
		{"absolute", tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{"symlink out", tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../../etc/passwd"}},
		{"absolute symlink", tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tt.hdr)
		_ = tw.Close()
		if err := untar(&buf, filepath.Join(t.TempDir(), "dst")); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

// Links are followed as the kernel follows them: a link whose text stays
// inside but whose path runs through another link out of the workspace is
// refused; links between the workspace's own directories are kept.
func TestUntarRefusesLinkChains(t *testing.T) {
	type entry struct{ name, link, body string }
	for _, tt := range []struct {
		name    string
		entries []entry
		ok      bool
	}{
		{"through a link to ..", []entry{{name: "sub/link", link: ".."}, {name: "up", link: "sub/link/.."}}, false},
		{"two steps out", []entry{{name: "sub/link", link: ".."}, {name: "up", link: "sub/link/.."}, {name: "up2", link: "up/.."}}, false},
		{"a loop", []entry{{name: "a", link: "b"}, {name: "b", link: "a"}}, false},
		{"a module shared in the tree", []entry{{name: "shared/main.tf", body: "# shared\n"}, {name: "envs/prod/shared", link: "../../shared"},
			{name: "envs/prod/main.tf", body: "# prod\n"}}, true},
		{"through a link, back in", []entry{{name: "sub/x.tf", body: "#\n"}, {name: "sub/link", link: ".."}, {name: "again", link: "sub/link/sub"}}, true},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range tt.entries {
			h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body))}
			if e.link != "" {
				h = &tar.Header{Name: e.name, Typeflag: tar.TypeSymlink, Linkname: e.link}
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		err := untar(&buf, filepath.Join(t.TempDir(), "src"))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// Checking where links lead has one budget for the whole tree: a few
// thousand long chained links, a few megabytes in git, are refused rather
// than checked for minutes.
func TestUntarBoundsLinkWalks(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("d/../", 800)
	for i := range 2000 {
		target := pad + fmt.Sprintf("l%d", max(i-1, 0)) // each link through the one before
		if i%39 == 0 {
			target = pad + "d" // chains end inside: by its paths alone, the tree is fine
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("l%d", i), Typeflag: tar.TypeSymlink, Linkname: target}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := untar(&buf, filepath.Join(t.TempDir(), "src")); err == nil {
		t.Fatal("a tree of thousands of long chained links was walked to the end and accepted")
	}
}

// A mirror replaced, while twokey runs, by a copy that has the commit is
// read as it is now, not as it was.
func TestReplacedMirrorWithTheCommit(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	rev := f.checkedOut(t)
	// Restored from a copy while twokey runs: the readers it keeps read
	// the mirror that was there.
	m := f.src.mirrorOf("acme/infra")
	restored := m.path + ".restored"
	if out, err := exec.Command("cp", "-a", m.path, restored).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.RemoveAll(m.path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(restored, m.path); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "b")
	if err := f.src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != "# v1\n" {
		t.Errorf("main.tf = %q, want the commit's", b)
	}
}

// A tree untar refuses is refused once, as itself: fetching again would not
// change it, and "commit not found" would hide why.
func TestRefusedTreeIsNotFetchedAgain(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	sha, err := f.repo.Commit(ctx, "feature", f.v1, "escape", map[string]*string{"up": devstack.Str("placeholder")})
	if err != nil {
		t.Fatal(err)
	}
	// A link that leads out through another: sub -> .., up -> sub/..
	out, err := exec.Command("sh", "-c", `set -e
w=$(mktemp -d); git clone -q "$1" "$w"; cd "$w"; git checkout -q "$2"
rm up; mkdir -p d; ln -s .. d/sub; ln -s d/sub/.. up
git -c user.name=t -c user.email=t@example.com add -A; git -c user.name=t -c user.email=t@example.com commit -qm links
git push -q origin HEAD:refs/pull/44/head; git rev-parse HEAD`, "sh", f.repo.Bare, sha).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Fields(string(out))
	head := lines[len(lines)-1]
	wrapper, calls := loggedGit(t)
	src, err := New(Options{APIURL: f.src.o.APIURL, Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Checkout(ctx, runner.Revision{Repo: "acme/infra", PR: 44, SHA: head, CloneURL: f.repo.CloneURL()}, filepath.Join(t.TempDir(), "src"))
	if err == nil || !strings.Contains(err.Error(), "outside the workspace") {
		t.Fatalf("err = %v, want the tree refused", err)
	}
	b, _ := os.ReadFile(calls)
	if n := strings.Count(string(b), " fetch "); n != 1 {
		t.Errorf("%d fetches for a refused tree, want 1:\n%s", n, b)
	}
}

// A mirror replaced under a running twokey by one without the commit
// (restored from an older backup) has the commit fetched into it, and the
// pull request's attributes do not apply.
func TestCheckoutResetsAReplacedMirror(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.checkedOut(t)
	m := f.src.mirrorOf("acme/infra")
	if err := os.RemoveAll(m.path); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "init", "-q", "--bare", m.path).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sha, err := f.repo.Commit(ctx, "feature", f.v1, "hide", map[string]*string{
		".gitattributes": devstack.Str("hidden.tf export-ignore\n"), "hidden.tf": devstack.Str("# here\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, 43, sha); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := f.src.Checkout(ctx, runner.Revision{Repo: "acme/infra", PR: 43, SHA: sha, CloneURL: f.repo.CloneURL()}, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "hidden.tf")); err != nil {
		t.Errorf("the pull request's export-ignore applied: %v", err)
	}
}

// Rollbacks: a commit or tag must be on the default branch.
func TestResolveRollbackRefs(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	base, err := f.repo.Commit(ctx, "main", "main", "v2", map[string]*string{"main.tf": devstack.Str("# v2 on main\n")})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := gitRevParse(t, f.repo, "main~1")
	if err := f.repo.Tag(ctx, "v1.0.0", first, "release 1.0.0"); err != nil { // annotated
		t.Fatal(err)
	}
	if err := f.repo.Tag(ctx, "light", base, ""); err != nil {
		t.Fatal(err)
	}
	if err := f.repo.Tag(ctx, "feature-tag", f.v1, ""); err != nil { // not on main
		t.Fatal(err)
	}
	tests := []struct {
		ref     runner.Ref
		wantSHA string
		wantErr error
	}{
		{ref: runner.Ref{SHA: first}, wantSHA: first},
		{ref: runner.Ref{SHA: base}, wantSHA: base},
		{ref: runner.Ref{}, wantSHA: base}, // the default branch's head
		{ref: runner.Ref{Tag: "v1.0.0"}, wantSHA: first},
		{ref: runner.Ref{Tag: "light"}, wantSHA: base},
		{ref: runner.Ref{SHA: f.v1}, wantErr: runner.ErrNotDefaultBranch},
		{ref: runner.Ref{Tag: "feature-tag"}, wantErr: runner.ErrNotDefaultBranch},
		{ref: runner.Ref{Tag: "nope"}, wantErr: runner.ErrRefNotFound},
		{ref: runner.Ref{SHA: strings.Repeat("1", 40)}, wantErr: runner.ErrRefNotFound},
	}
	for _, tt := range tests {
		rev, err := f.src.Resolve(ctx, "acme/infra", tt.ref)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%+v: err = %v, want %v", tt.ref, err, tt.wantErr)
			continue
		}
		if err == nil && (rev.SHA != tt.wantSHA || rev.Branch != "main" || rev.CloneURL == "") {
			t.Errorf("%+v: rev = %+v", tt.ref, rev)
		}
	}
	// And a rollback's commit checks out from the default branch.
	rev, err := f.src.Resolve(ctx, "acme/infra", runner.Ref{Tag: "v1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := f.src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != "# v0\n" {
		t.Fatalf("main.tf = %q, want v0", b)
	}
}

func gitRevParse(t *testing.T, repo *devstack.GitRepo, rev string) (string, error) {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", repo.Bare, "rev-parse", rev).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), nil
}

// With Prefetch, resolving a pull request fetches its head into the mirror
// while the plan is set up, and the checkout then needs one git process.
func TestPrefetchedCheckout(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	wrapper, calls := loggedGit(t)
	read := func() []string {
		b, _ := os.ReadFile(calls)
		return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
	}
	for _, prefetch := range []bool{true, false} {
		_ = os.Remove(calls)
		src, err := New(Options{APIURL: f.src.o.APIURL, Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper, Prefetch: prefetch})
		if err != nil {
			t.Fatal(err)
		}
		rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
		if err != nil {
			t.Fatal(err)
		}
		if prefetch {
			// Wait for the prefetch to end, and its gc.
			m := src.mirrorOf("acme/infra")
			for deadline := time.Now().Add(10 * time.Second); src.prefetched(m, rev.SHA) != nil; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the prefetch did not end: %q", read())
				}
			}
			m.mu.Lock()
			m.mu.Unlock()
		}
		before := len(read())
		if err := src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
			t.Fatal(err)
		}
		// Making the mirror and git's upkeep of it (gc) are not the checkout's.
		after := slices.DeleteFunc(read()[before:], func(c string) bool { return strings.HasPrefix(c, "init_") || strings.Contains(c, "_gc_") })
		if want := map[bool]int{true: 1, false: 3}[prefetch]; len(after) != want {
			t.Errorf("prefetch %v: the checkout ran %d git processes, want %d: %q", prefetch, len(after), want, after)
		}
	}
}

// gatedPull serves f's GitHub through a gate: pull request pr is answered
// only once the mirror's ref of it points at want (then, before the
// answer, moved runs, if not nil), or after 10 s, as unavailable. It
// returns a Source with Prefetch that has read pull request 42 already,
// which gave it the repository's clone URL, and its git's log. With pr 0,
// nothing waits.
func gatedPull(t *testing.T, f fixture, pr int, want string, moved func()) (*Source, string) {
	t.Helper()
	ctx := context.Background()
	var src *Source
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, fmt.Sprintf("/pulls/%d", pr)) {
			m := src.mirrorOf("acme/infra")
			deadline := time.Now().Add(10 * time.Second)
			for refAt(m, runner.Revision{PR: pr}) != want {
				if time.Now().After(deadline) {
					http.Error(w, "the head was not fetched while the pull request was read", http.StatusServiceUnavailable)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			if moved != nil {
				moved()
			}
		}
		f.gh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	wrapper, calls := loggedGit(t)
	var err error
	src, err = New(Options{APIURL: srv.URL + "/api/v3/", Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
		t.Fatal(err)
	}
	return src, calls
}

// fetchesSince returns what counts the git fetches logged in calls after
// now, and gives the lines logged since.
func fetchesSince(calls string) func() (int, string) {
	before, _ := os.ReadFile(calls)
	return func() (int, string) {
		after, _ := os.ReadFile(calls)
		log := string(after[len(before):])
		return strings.Count(log, " fetch "), log
	}
}

// newPull publishes pull request n of f's repository with a head whose
// main.tf is text, and returns the head.
func newPull(t *testing.T, f fixture, n int, text string) string {
	t.Helper()
	ctx := context.Background()
	base, err := gitRevParse(t, f.repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	sha, err := f.repo.Commit(ctx, fmt.Sprintf("pr-%d", n), base, text, map[string]*string{"main.tf": devstack.Str(text)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.repo.PublishPull(ctx, n, sha); err != nil {
		t.Fatal(err)
	}
	f.gh.SetPull("acme/infra", ghsim.Pull{Number: n, HeadSHA: sha, HeadRef: fmt.Sprintf("pr-%d", n), Title: text})
	return sha
}

// A pull request the mirror has never had is fetched while it is read,
// once: the checkout then only reads the mirror.
func TestNewPullRequestIsFetchedWhileRead(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	head := newPull(t, f, 43, "# 43\n")
	src, calls := gatedPull(t, f, 43, head, nil)
	fetched := fetchesSince(calls)
	rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 43})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "main.tf")); err != nil || string(b) != "# 43\n" {
		t.Fatalf("checked out main.tf %q (%v), want pull request 43's", b, err)
	}
	if n, log := fetched(); n != 1 {
		t.Errorf("pull request 43 was fetched %d times, want once:\n%s", n, log)
	}
}

// A head pushed between the early fetch and the pull request's read is the
// one checked out: the read says which, and it is fetched.
func TestHeadPushedWhileReadIsFetched(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	first := newPull(t, f, 43, "# 43, first\n")
	src, _ := gatedPull(t, f, 43, first, func() { newPull(t, f, 43, "# 43, pushed while read\n") })
	rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 43})
	if err != nil {
		t.Fatal(err)
	}
	if rev.SHA == first {
		t.Fatal("the pull request was read before the push")
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "main.tf")); err != nil || string(b) != "# 43, pushed while read\n" {
		t.Fatalf("checked out main.tf %q (%v), want the head pushed while the pull request was read", b, err)
	}
}

// A fetch from a remote that stalls ends with its context, and with it
// every process it started, which would otherwise hold the mirror.
func TestStalledRemoteEndsWithItsContext(t *testing.T) {
	f := setup(t)
	f.gh.GitOverHTTP = true
	stall, hungUp := make(chan struct{}), make(chan struct{}, 1)
	defer close(stall)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			// With the request read, a closed connection ends its context.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-stall:
			case <-r.Context().Done(): // git's HTTP helper is gone
				hungUp <- struct{}{}
			}
			return
		}
		f.gh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rev := runner.Revision{Repo: "acme/infra", PR: 42, SHA: f.v1, CloneURL: srv.URL + "/acme/infra.git"}
	m := f.src.mirrorOf("acme/infra")
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := f.src.setUp(context.Background(), rev, m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.src.fetch(ctx, rev, m.path) }()
	time.Sleep(500 * time.Millisecond) // the fetch is under way, stalled
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a stalled fetch succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a fetch whose context ended is still running")
	}
	select {
	case <-hungUp:
	case <-time.After(20 * time.Second):
		t.Fatal("a process of the fetch outlived it, still connected to the remote")
	}
}

// A pull request is fetched early once, whatever comes of it: a number that
// is no pull request's costs one fetch, not one per /tf plan.
func TestPullRequestIsFetchedEarlyOnce(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	src, calls := gatedPull(t, f, 0, "", nil)
	fetched := fetchesSince(calls)
	m := src.mirrorOf("acme/infra")
	for range 3 {
		if _, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 999}); !errors.Is(err, runner.ErrPRNotFound) {
			t.Fatalf("resolve of no pull request: %v", err)
		}
		for src.prefetched(m, refName(runner.Revision{PR: 999})) != nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n, log := fetched(); n != 1 {
		t.Errorf("three reads of no pull request fetched %d times, want once:\n%s", n, log)
	}
}

// Every number a planner types is remembered as tried, up to a bound.
func TestTriedPullRequestsAreBounded(t *testing.T) {
	f := setup(t)
	src, _ := gatedPull(t, f, 0, "", nil)
	m := src.mirrorOf("acme/infra")
	src.mu.Lock()
	m.cloneURL = "" // nothing is fetched
	src.mu.Unlock()
	for pr := range 3 * maxTried {
		if src.fetchEarly(context.Background(), m, "acme/infra", pr+1) != nil {
			t.Fatal("an early fetch without a clone URL")
		}
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if n := len(m.tried); n == 0 || n > maxTried {
		t.Fatalf("%d pull requests remembered as tried, want 1 to %d", n, maxTried)
	}
}

// A pull request whose head the mirror has had (read before twokey
// restarted, say) is not fetched early: its head most likely has not moved.
func TestKnownPullRequestIsNotFetchedEarly(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	newPull(t, f, 43, "# 43\n")
	first, calls := gatedPull(t, f, 0, "", nil)
	rev, err := first.Resolve(ctx, "acme/infra", runner.Ref{PR: 43})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
		t.Fatal(err)
	}
	// The same mirror, read by a twokey started afresh.
	again, err := New(Options{APIURL: first.o.APIURL, Token: first.o.Token, MirrorDir: first.o.MirrorDir, Git: first.o.Git, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	fetched := fetchesSince(calls)
	for _, pr := range []int{42, 43} {
		rev, err := again.Resolve(ctx, "acme/infra", runner.Ref{PR: pr})
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
			t.Fatal(err)
		}
	}
	if n, log := fetched(); n != 0 {
		t.Errorf("heads the mirror has were fetched %d times:\n%s", n, log)
	}
}

// The checkout of the head an early fetch brought waits for that fetch,
// not for the git gc it runs afterwards under the mirror's lock.
func TestCheckoutDoesNotWaitForTheEarlyFetchsGC(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	head := newPull(t, f, 43, "# 43\n")
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hold, release := filepath.Join(dir, "hold"), filepath.Join(dir, "release")
	wrapper := filepath.Join(dir, "git")
	// While hold exists, a gc waits for release.
	script := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *\" gc \"*) while [ -e %s ] && [ ! -e %s ]; do sleep 0.01; done;; esac\nexec %s \"$@\"\n", hold, release, gitPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{APIURL: f.src.o.APIURL, Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42}); err != nil {
		t.Fatal(err)
	}
	m := src.mirrorOf("acme/infra")
	for src.prefetched(m, f.v1) != nil {
		time.Sleep(5 * time.Millisecond)
	}
	m.mu.Lock() // and its gc
	m.mu.Unlock()
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before dir goes: the gc ends
		_ = os.WriteFile(release, nil, 0o600)
		m.mu.Lock()
		m.mu.Unlock()
	})
	done := make(chan error, 1)
	go func() {
		rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 43})
		if err == nil && rev.SHA != head {
			err = fmt.Errorf("resolved %s, want %s", rev.SHA, head)
		}
		if err == nil {
			err = src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src"))
		}
		done <- err
	}()
	if err := ended(t, done, "the checkout waited for the early fetch's gc"); err != nil {
		t.Fatal(err)
	}
}

// A checkout that must fetch behind another fetch (one that stalls, say)
// gives up when its own context ends, not when the other fetch does.
func TestCheckoutBehindAStalledFetchEndsWithItsContext(t *testing.T) {
	f := setup(t)
	m := f.src.mirrorOf("acme/infra")
	m.mu.Lock() // the other fetch
	defer m.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	rev := runner.Revision{Repo: "acme/infra", PR: 42, SHA: f.v1, CloneURL: f.repo.CloneURL()}
	done := make(chan error, 1)
	go func() { done <- f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")) }()
	time.Sleep(100 * time.Millisecond) // the checkout waits for the mirror
	cancel()
	if err := ended(t, done, "the checkout waited for the mirror after its context ended"); !errors.Is(err, context.Canceled) {
		t.Fatalf("checkout: %v, want its context's end", err)
	}
}
