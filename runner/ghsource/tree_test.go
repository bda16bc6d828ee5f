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
	"strconv"
	"strings"
	"testing"

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
// ".", a path, nothing; a file that is a tree; a mode git does not make; a
// link longer than any path — is refused whole: nothing of it is written,
// anywhere. The refusal leaves the mirror's readers in step: the next
// checkout is the commit's.
func TestCheckoutRefusesHostileTrees(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	good := f.checkedOut(t)
	blob := f.object(t, "blob", []byte("# planted\n"))
	inner := f.tree(t, [3]string{"100644", "x.tf", blob})
	long := f.object(t, "blob", bytes.Repeat([]byte("a/"), 3000))
	for i, tc := range []struct {
		name    string
		entries [][3]string
	}{
		{"dot-dot", [][3]string{{"40000", "..", inner}}},
		{"dot", [][3]string{{"40000", ".", inner}}},
		{"a path", [][3]string{{"100644", "../escaped.tf", blob}}},
		{"a nested path", [][3]string{{"100644", "a/b.tf", blob}}},
		{"no name", [][3]string{{"100644", "", blob}}},
		{"a tree as a file", [][3]string{{"100644", "main.tf", inner}}},
		{"an unknown mode", [][3]string{{"100600", "main.tf", blob}}},
		{"a link too long", [][3]string{{"120000", "l", long}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "src")
			rev := f.pull(t, 100+i, f.tree(t, append([][3]string{{"100644", "aaa.tf", blob}}, tc.entries...)...))
			if err := f.src.Checkout(ctx, rev, dst); err == nil {
				t.Fatal("checked out")
			}
			if left, _ := filepath.Glob(filepath.Join(parent, "*")); len(left) != 0 {
				t.Errorf("a refused tree left %q", left)
			}
			dst = filepath.Join(t.TempDir(), "src")
			if err := f.src.Checkout(ctx, good, dst); err != nil {
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
	for _, sha := range []string{
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
