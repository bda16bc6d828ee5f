package ghsource

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
)

// object writes an object of type typ into f's origin as is, as a pushed
// one can be (no check of it), and returns its ID.
func (f fixture) object(t *testing.T, typ string, content []byte) string {
	t.Helper()
	cmd := exec.Command("git", "--git-dir", f.repo.Bare, "hash-object", "-t", typ, "--literally", "-w", "--stdin")
	cmd.Stdin = bytes.NewReader(content)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hash-object: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// tree writes a tree of entries (mode, name, ID) into f's origin.
func (f fixture) tree(t *testing.T, entries ...[3]string) string {
	t.Helper()
	var b bytes.Buffer
	for _, e := range entries {
		id, err := hex.DecodeString(e[2])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s\x00", e[0], e[1])
		b.Write(id)
	}
	return f.object(t, "tree", b.Bytes())
}

// pull publishes a commit of tree as pull request n of f's origin and
// returns its revision.
func (f fixture) pull(t *testing.T, n int, tree string) runner.Revision {
	t.Helper()
	commit := f.object(t, "commit", fmt.Appendf(nil, "tree %s\nauthor a <a@example.com> 1 +0000\ncommitter a <a@example.com> 1 +0000\n\npr %d\n", tree, n))
	if out, err := exec.Command("git", "--git-dir", f.repo.Bare, "update-ref", fmt.Sprintf("refs/pull/%d/head", n), commit).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return runner.Revision{Repo: "acme/infra", PR: n, SHA: commit, CloneURL: f.repo.CloneURL()}
}

// A pushed tree that git itself would never write — an entry named "..",
// ".", a path, nothing, or .git in any spelling a file system may take for
// it; one name twice; a file or a directory that is something else; a
// mode git does not make; a link longer than any path, or with a NUL, or
// that is .gitmodules — is refused whole, as itself: nothing of it is
// written, anywhere, and it is not fetched again. The refusal leaves the
// mirror's readers in step: the next checkout is the commit's.
func TestCheckoutRefusesHostileTrees(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	wrapper, calls := loggedGit(t)
	src, err := New(Options{APIURL: f.src.o.APIURL, Token: f.src.o.Token, MirrorDir: t.TempDir(), Git: wrapper})
	if err != nil {
		t.Fatal(err)
	}
	good, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	blob := f.object(t, "blob", []byte("# planted\n"))
	inner := f.tree(t, [3]string{"100644", "x.tf", blob})
	config := f.tree(t, [3]string{"100644", "config", f.object(t, "blob", []byte("[core]\n\tfsmonitor = touch planted\n"))})
	long := f.object(t, "blob", bytes.Repeat([]byte("a/"), 3000))
	cases := []struct {
		name    string
		entries [][3]string
	}{
		{"dot-dot", [][3]string{{"40000", "..", inner}}},
		{"dot", [][3]string{{"40000", ".", inner}}},
		{"a path", [][3]string{{"100644", "../escaped.tf", blob}}},
		{"a nested path", [][3]string{{"100644", "a/b.tf", blob}}},
		{"no name", [][3]string{{"100644", "", blob}}},
		{"one name twice", [][3]string{{"100644", "d", blob}, {"40000", "d", inner}}},
		{"a link and a directory of one name", [][3]string{{"120000", "d", f.object(t, "blob", []byte("."))}, {"40000", "d", inner}}},
		{"a tree as a file", [][3]string{{"100644", "main.tf", inner}}},
		{"a file as a directory", [][3]string{{"40000", "d", blob}}},
		{"a commit as a directory", [][3]string{{"40000", "d", f.v1}}},
		{"an unknown mode", [][3]string{{"100600", "main.tf", blob}}},
		{"a link too long", [][3]string{{"120000", "l", long}}},
		{"a link with a NUL", [][3]string{{"120000", "l", f.object(t, "blob", []byte("a\x00/../../etc"))}}},
		{"a link named .gitmodules", [][3]string{{"120000", ".gitmodules", f.object(t, "blob", []byte("x"))}}},
		{"a link named .GITATTRIBUTES.", [][3]string{{"120000", ".GITATTRIBUTES.", f.object(t, "blob", []byte("x"))}}},
	}
	for _, name := range []string{".git", ".GIT", ".Git", "git~1", "GIT~1", ".git.", ".git ", ".g\u200cit", ".git\ufeff"} {
		cases = append(cases,
			struct {
				name    string
				entries [][3]string
			}{fmt.Sprintf("a directory %q", name), [][3]string{{"40000", "sub", f.tree(t, [3]string{"40000", name, config})}}},
			struct {
				name    string
				entries [][3]string
			}{fmt.Sprintf("a file %q", name), [][3]string{{"100644", name, blob}}},
			struct {
				name    string
				entries [][3]string
			}{fmt.Sprintf("a link %q", name), [][3]string{{"120000", name, f.object(t, "blob", []byte("sub"))}}})
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "src")
			rev := f.pull(t, 100+i, f.tree(t, append([][3]string{{"100644", "aaa.tf", blob}}, tc.entries...)...))
			err := src.Checkout(ctx, rev, dst)
			if err == nil {
				t.Fatal("checked out")
			}
			// Some the local remote will not even send; the others are in
			// the mirror, and refused from there.
			if !errors.Is(err, runner.ErrSource) {
				fetched := fetchesSince(calls)
				if err := src.Checkout(ctx, rev, dst); err == nil {
					t.Fatal("checked out the second time")
				}
				if n, log := fetched(); n != 0 {
					t.Errorf("the refused tree was fetched again:\n%s", log)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(parent, "*")); len(left) != 0 {
				t.Errorf("a refused tree left %q", left)
			}
			dst = filepath.Join(t.TempDir(), "src")
			if err := src.Checkout(ctx, good, dst); err != nil {
				t.Fatalf("the checkout after: %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != "# v1\n" {
				t.Errorf("the checkout after: main.tf = %q", b)
			}
		})
	}
}

// The commit to check out is one object ID, nothing else: a line break
// cannot ask the mirror's reader for another object, and a name is not
// resolved.
func TestCheckoutTakesOnlyAnObjectID(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	good := f.checkedOut(t)
	tag := f.object(t, "tag", fmt.Appendf(nil, "object %s\ntype commit\ntag t\ntagger a <a@example.com> 1 +0000\n\nt\n", good.SHA))
	if out, err := exec.Command("git", "--git-dir", f.repo.Bare, "update-ref", "refs/pull/42/head", tag).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mirror := f.src.mirrorOf("acme/infra").path
	if err := f.src.fetch(ctx, runner.Revision{PR: 42, CloneURL: good.CloneURL}, mirror); err != nil {
		t.Fatal(err)
	}
	// A ref whose name looks like an ID of another hash.
	if out, err := exec.Command("git", "-C", mirror, "update-ref", "refs/heads/"+strings.Repeat("a", 64), good.SHA).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, sha := range []string{
		tag,                     // a tag of the commit, not the commit
		strings.Repeat("a", 64), // a name, in a mirror of SHA-1 IDs
		good.SHA + "\n" + good.SHA,
		"refs/pull/42/head",
		good.SHA + "^{tree}",
		strings.ToUpper(good.SHA),
		good.SHA[:39],
	} {
		rev := good
		rev.SHA = sha
		dst := filepath.Join(t.TempDir(), "src")
		if err := f.src.Checkout(ctx, rev, dst); err == nil {
			t.Errorf("%q checked out", sha)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Errorf("%q left the workspace", sha)
		}
	}
	if err := f.src.Checkout(ctx, good, filepath.Join(t.TempDir(), "src")); err != nil {
		t.Fatalf("the checkout after: %v", err)
	}
}

// A chain of nested trees ends where paths can no longer be made (4096
// bytes), as itself: the walk stops there, at no more than that depth,
// whatever lies below.
func TestCheckoutRefusesTooDeepTrees(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	below := f.tree(t, [3]string{"100644", "deep.tf", f.object(t, "blob", []byte("# deep\n"))})
	for range 2100 {
		below = f.loose(t, "tree", append([]byte("40000 a\x00"), mustHex(t, below)...))
	}
	rev := f.pull(t, 300, below)
	err := f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src"))
	if err == nil || !strings.Contains(err.Error(), "longer than 4096 bytes") {
		t.Fatalf("checkout of a tree 2100 deep: %v; want it refused for its path's length", err)
	}
}

// loose writes an object into f's origin as a loose object, without git:
// thousands of them in no time.
func (f fixture) loose(t *testing.T, typ string, content []byte) string {
	t.Helper()
	raw := append(fmt.Appendf(nil, "%s %d\x00", typ, len(content)), content...)
	id := fmt.Sprintf("%x", sha1.Sum(raw))
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	dir := filepath.Join(f.repo.Bare, "objects", id[:2])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id[2:]), z.Bytes(), 0o444); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	return id
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A tree is written as git makes it: executable files stay executable,
// links are links to what they name, a submodule is an empty directory,
// and bytes are the blob's, a CR and a missing last newline included.
func TestCheckoutWritesTheTreeAsIs(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	script := f.object(t, "blob", []byte("#!/bin/sh\r\necho hi"))
	link := f.object(t, "blob", []byte("../run.sh"))
	sub := f.tree(t,
		[3]string{"120000", "link", link},
		[3]string{"160000", "vendored", f.v1}, // any commit: a submodule's is not in the mirror
	)
	rev := f.pull(t, 200, f.tree(t,
		[3]string{"40000", "dir", sub},
		[3]string{"100755", "run.sh", script},
	))
	dst := filepath.Join(t.TempDir(), "src")
	if err := f.src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dst, "run.sh"))
	if err != nil || st.Mode()&0o100 == 0 {
		t.Errorf("run.sh: %v, mode %v, want executable", err, st.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "run.sh")); string(b) != "#!/bin/sh\r\necho hi" {
		t.Errorf("run.sh = %q", b)
	}
	if target, err := os.Readlink(filepath.Join(dst, "dir", "link")); err != nil || target != "../run.sh" {
		t.Errorf("dir/link -> %q, %v", target, err)
	}
	if entries, err := os.ReadDir(filepath.Join(dst, "dir", "vendored")); err != nil || len(entries) != 0 {
		t.Errorf("dir/vendored: %v, %v; want an empty directory", entries, err)
	}
}

// BenchmarkWriteTree: a commit of 3 or 1,000 files (in dirs of 50) written from
// the mirror into a fresh workspace, by the mirror's readers and, for
// comparison, by `git archive` streamed into the same untar.
func BenchmarkWriteTree(b *testing.B) {
	for _, files := range []int{3, 1000} {
		ctx := context.Background()
		repo, err := devstack.NewGitRepo(ctx, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		tree := map[string]*string{}
		for i := range files {
			tree[fmt.Sprintf("d%d/f%d.tf", i/50, i)] = devstack.Str(fmt.Sprintf("# %d\n%s", i, strings.Repeat("x", 500)))
		}
		sha, err := repo.Commit(ctx, "main", "", "big", tree)
		if err != nil {
			b.Fatal(err)
		}
		src, err := New(Options{APIURL: "http://127.0.0.1:1/", MirrorDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		rev := runner.Revision{Repo: "acme/infra", Branch: "main", SHA: sha, CloneURL: repo.CloneURL()}
		if err := src.Checkout(ctx, rev, filepath.Join(b.TempDir(), "warm")); err != nil {
			b.Fatal(err)
		}
		m := src.mirrorOf("acme/infra")
		b.Run(fmt.Sprintf("files=%d/readers", files), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if err := src.writeTree(ctx, rev, m, filepath.Join(b.TempDir(), strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("files=%d/git-archive", files), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				pr, pw := io.Pipe()
				untarred := make(chan error, 1)
				go func() {
					err := untar(pr, filepath.Join(b.TempDir(), strconv.Itoa(i)))
					_, _ = io.Copy(io.Discard, pr) // git pads the archive past its end
					untarred <- err
				}()
				err := src.gitTo(ctx, rev.CloneURL, pw, "-C", m.path, "archive", "--format=tar", sha)
				pw.CloseWithError(err)
				if err := errors.Join(err, <-untarred); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A small push can name millions of files: one tree of 20,000 files and
// one of 200 directories, each that tree, name 4,000,000. The checkout
// holds one tree's entries at a time, not every path: here the first file
// is refused (it is a tree) before any directory but the first is read.
func TestCheckoutHoldsOneTreeAtATime(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	notBlob := f.tree(t)
	var files, dirs [][3]string
	for i := range 20000 {
		files = append(files, [3]string{"100644", fmt.Sprintf("f%05d.tf", i), notBlob})
	}
	wide := f.tree(t, files...)
	for i := range 200 {
		dirs = append(dirs, [3]string{"40000", fmt.Sprintf("d%03d", i), wide})
	}
	rev := f.pull(t, 500, f.tree(t, dirs...))
	_ = f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "warm")) // fetched into the mirror
	var err error
	peak := peakHeap(func() {
		err = f.src.writeTree(ctx, rev, f.src.mirrorOf("acme/infra"), filepath.Join(t.TempDir(), "src"))
	})
	if !errors.As(err, new(treeError)) {
		t.Fatalf("checkout: %v; want the tree refused", err)
	}
	if peak > 64<<20 {
		t.Errorf("the heap grew by %d MiB for a push of two trees", peak>>20)
	}
}

// A commit's message can be of any length; only its first line is read.
func TestCheckoutReadsACommitsFirstLine(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	tree := f.tree(t, [3]string{"100644", "main.tf", f.object(t, "blob", []byte("# huge\n"))})
	body := append(fmt.Appendf(nil, "tree %s\nauthor a <a@example.com> 1 +0000\ncommitter a <a@example.com> 1 +0000\n\n", tree), make([]byte, 128<<20)...)
	commit := f.object(t, "commit", body)
	body = nil
	if out, err := exec.Command("git", "--git-dir", f.repo.Bare, "update-ref", "refs/pull/800/head", commit).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	rev := runner.Revision{Repo: "acme/infra", PR: 800, SHA: commit, CloneURL: f.repo.CloneURL()}
	if err := f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "warm")); err != nil {
		t.Fatal(err)
	}
	var err error
	peak := peakHeap(func() {
		err = f.src.writeTree(ctx, rev, f.src.mirrorOf("acme/infra"), filepath.Join(t.TempDir(), "src"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if peak > 64<<20 {
		t.Errorf("the heap grew by %d MiB for a commit of 128 MiB", peak>>20)
	}
}

// peakHeap is how far the heap in use grew above where it was, sampled
// every 5 ms while fn runs.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

// Checkouts of one mirror at once, some cancelled at any moment, some of
// trees that are refused, with files larger than any buffer on the way:
// each that succeeds is its own commit's tree, whichever reader it had.
func TestConcurrentCheckoutsGetTheirOwnTrees(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.checkedOut(t)
	notBlob := f.tree(t)
	type pull struct {
		rev       runner.Revision
		main, big string
		refused   bool
	}
	var pulls []pull
	for i := range 12 {
		p := pull{main: fmt.Sprintf("# pull %d\n", i), big: strings.Repeat(strconv.Itoa(i%10), 200<<10+i), refused: i%4 == 3}
		entries := [][3]string{
			{"100644", "main.tf", f.object(t, "blob", []byte(p.main))},
			{"100644", "big.bin", f.object(t, "blob", []byte(p.big))},
		}
		if p.refused {
			entries = append(entries, [3]string{"100644", "zz", notBlob})
		}
		p.rev = f.pull(t, 1000+i, f.tree(t, entries...))
		if err := f.src.Checkout(ctx, p.rev, filepath.Join(t.TempDir(), "warm")); (err != nil) != p.refused {
			t.Fatalf("pull %d: %v", i, err)
		}
		pulls = append(pulls, p)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 15 {
				p := pulls[(g*7+k*5)%len(pulls)]
				ctx, cancel := context.WithCancel(ctx)
				if k%3 == 0 {
					time.AfterFunc(time.Duration(k*37%400)*time.Microsecond, cancel)
				}
				dst := filepath.Join(t.TempDir(), "src")
				err := f.src.Checkout(ctx, p.rev, dst)
				cancel()
				if err != nil {
					continue
				}
				main, _ := os.ReadFile(filepath.Join(dst, "main.tf"))
				big, _ := os.ReadFile(filepath.Join(dst, "big.bin"))
				if p.refused || string(main) != p.main || string(big) != p.big {
					t.Errorf("pull %d checked out as main.tf %q and %d bytes of big.bin (refused: %v)", p.rev.PR, main, len(big), p.refused)
				}
			}
		})
	}
	wg.Wait()
}

// Readers kept between checkouts do not keep the packs gc replaces: they
// are ended once it has.
func TestReadersEndWhenGCRepacks(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.checkedOut(t)
	m := f.src.mirrorOf("acme/infra")
	// Each fetch brings a pack, and gc puts the packs into one.
	for _, kv := range [][2]string{{"fetch.unpackLimit", "1"}, {"gc.autoPackLimit", "1"}} {
		if out, err := exec.Command("git", "-C", m.path, "config", kv[0], kv[1]).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	for i := range 3 {
		// Fetched into the mirror as a prefetch does, while a reader
		// waits to be used again, then checked out.
		rev := newPullRev(t, f, 60+i)
		m.mu.Lock()
		err := f.src.fetch(ctx, rev, m.path)
		if err == nil {
			f.src.gc(ctx, rev, m)
		}
		m.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.src.Checkout(ctx, rev, filepath.Join(t.TempDir(), "src")); err != nil {
			t.Fatal(err)
		}
	}
	f.src.mu.Lock()
	idle := slices.Clone(m.readers)
	f.src.mu.Unlock()
	if len(idle) == 0 {
		t.Fatal("no reader was kept")
	}
	for _, r := range idle {
		maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", r.cmd.Process.Pid))
		for line := range strings.SplitSeq(string(maps), "\n") {
			if strings.Contains(line, "pack-") && strings.HasSuffix(line, "(deleted)") {
				t.Errorf("a kept reader still maps a pack gc removed: %s", line)
			}
		}
	}
}

// newPullRev publishes pull request n with a main.tf of its own and
// returns its revision.
func newPullRev(t *testing.T, f fixture, n int) runner.Revision {
	t.Helper()
	sha := newPull(t, f, n, fmt.Sprintf("# %d\n", n))
	return runner.Revision{Repo: "acme/infra", PR: n, SHA: sha, CloneURL: f.repo.CloneURL()}
}

// A reader in use while its mirror is forgotten (made again, repacked) is
// ended when it is given back, not kept.
func TestReaderOfAForgottenMirrorIsNotKept(t *testing.T) {
	f := setup(t)
	f.checkedOut(t)
	m := f.src.mirrorOf("acme/infra")
	r, err := f.src.reader(m)
	if err != nil {
		t.Fatal(err)
	}
	f.src.forget(m)
	f.src.done(m, r)
	f.src.mu.Lock()
	kept := len(m.readers)
	f.src.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d readers kept", kept)
	}
	if r.cmd.ProcessState == nil {
		t.Error("the reader of the forgotten mirror still runs")
	}
}
