package ghsource

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// A commit's tree is read from its mirror by `git cat-file --batch`
// processes that stay up between checkouts, rather than by a `git archive`
// per checkout: starting a git process costs about as much as exporting a
// small tree, and the checkout is on every plan's way to terraform. Blobs
// are written as their exact bytes: no attribute applies, whatever the
// commit's .gitattributes say (git archive would apply export-ignore,
// export-subst and the like).

// maxIdleReaders bounds the readers a mirror keeps between checkouts; more
// run at once when more checkouts do.
const maxIdleReaders = 4

// maxWhole bounds a commit or tree object, which is read whole: git's own
// are far smaller (a tree of 100,000 entries is about 5 MiB).
const maxWhole = 64 << 20

// maxPath bounds a path in a tree: longer ones cannot be made on Linux
// (PATH_MAX), and a chain of nested trees must not grow without end.
const maxPath = 4096

// errMissing is an object the mirror does not have (yet): a fetch may
// bring it. (A reader finds what fetches add after it started: git looks
// for loose objects, and for packs again, whenever one is missing.)
var errMissing = errors.New("not in the mirror")

// reader is one `git cat-file --batch` of a mirror.
type reader struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// reader takes one of m's idle readers, or starts one.
func (s *Source) reader(m *mirror) (*reader, error) {
	s.mu.Lock()
	if n := len(m.readers); n > 0 {
		r := m.readers[n-1]
		m.readers = m.readers[:n-1]
		s.mu.Unlock()
		return r, nil
	}
	s.mu.Unlock()
	cmd := exec.Command(s.o.Git, "-C", m.path, "cat-file", "--batch")
	cmd.Env = s.gitEnv()
	// Ended with twokey: its stdin closes then, and the signal covers a
	// reader that is in the middle of an answer.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("git cat-file: %w", err)
	}
	return &reader{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 64<<10)}, nil
}

// done gives r back to m's idle readers, or ends it if m has enough.
func (s *Source) done(m *mirror, r *reader) {
	s.mu.Lock()
	if len(m.readers) < maxIdleReaders {
		m.readers = append(m.readers, r)
		r = nil
	}
	s.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// forget ends m's idle readers: m is being made again.
func (s *Source) forget(m *mirror) {
	s.mu.Lock()
	idle := m.readers
	m.readers = nil
	s.mu.Unlock()
	for _, r := range idle {
		r.close()
	}
}

// close ends r.
func (r *reader) close() {
	_ = r.in.Close()
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// object asks r for the object name names and reads its answer (see
// answer).
func (r *reader) object(name string) (oid, typ string, size int64, err error) {
	if _, err := io.WriteString(r.in, name+"\n"); err != nil {
		return "", "", 0, err
	}
	return r.answer(name)
}

// answer reads the answer to the request for name: the object's ID, type
// and size, after which its content, size bytes and a newline, is next in
// r.out. A name git finds nothing for is errMissing.
func (r *reader) answer(name string) (oid, typ string, size int64, err error) {
	line, err := r.out.ReadString('\n')
	if err != nil {
		return "", "", 0, err
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == name && (f[1] == "missing" || f[1] == "ambiguous"):
		return "", "", 0, fmt.Errorf("%s: %w", name, errMissing)
	case len(f) != 3:
		return "", "", 0, fmt.Errorf("git cat-file answered %q", strings.TrimSpace(line))
	}
	size, err = strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return "", "", 0, fmt.Errorf("git cat-file answered %q", strings.TrimSpace(line))
	}
	return f[0], f[1], size, nil
}

// read reads the content of an object of size bytes that object announced.
func (r *reader) read(size int64) ([]byte, error) {
	b := make([]byte, size+1)
	if _, err := io.ReadFull(r.out, b); err != nil {
		return nil, err
	}
	if b[size] != '\n' {
		return nil, errors.New("git cat-file: an object's content is not where its size says")
	}
	return b[:size], nil
}

// copyTo copies the content of an object of size bytes to w.
func (r *reader) copyTo(w io.Writer, size int64) error {
	if _, err := io.CopyN(w, r.out, size); err != nil {
		return err
	}
	if b, err := r.out.ReadByte(); err != nil || b != '\n' {
		return errors.New("git cat-file: an object's content is not where its size says")
	}
	return nil
}

// export writes the tree of commit sha in m to w, as a tar stream that
// untar reads. An object m lacks is errMissing; a tree that cannot be
// written as files (an entry whose name is a path, a mode git does not
// make) is a treeError.
func (s *Source) export(ctx context.Context, m *mirror, sha string, w io.Writer) error {
	if !isObjectID(sha) {
		return treeError{fmt.Errorf("commit %q is not an object ID", sha)}
	}
	r, err := s.reader(m)
	if err != nil {
		return err
	}
	// A reader that is stuck (a mirror on a hung disk) is ended with ctx.
	stop := context.AfterFunc(ctx, func() { _ = r.cmd.Process.Kill() })
	tw := tar.NewWriter(w)
	err = r.exportCommit(tw, sha)
	if err == nil {
		err = tw.Close()
	}
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	// A reader is reused only after a whole tree: a failed write to w
	// (untar refused a file) may leave part of a blob unread, and a
	// reader that misses an object may be reading a mirror that was
	// replaced since it started.
	if err == nil {
		s.done(m, r)
	} else {
		r.close()
	}
	return err
}

func (r *reader) exportCommit(tw *tar.Writer, sha string) error {
	_, typ, size, err := r.object(sha + "^{commit}")
	if err != nil {
		return err
	}
	if typ != "commit" || size > maxWhole {
		return treeError{fmt.Errorf("%s is not a commit git makes", sha)}
	}
	commit, err := r.read(size)
	if err != nil {
		return err
	}
	tree, ok := bytes.CutPrefix(commit, []byte("tree "))
	if !ok || bytes.IndexByte(tree, '\n') < 0 || !isObjectID(string(tree[:bytes.IndexByte(tree, '\n')])) {
		return treeError{fmt.Errorf("%s is not a commit git makes", sha)}
	}
	root := string(tree[:bytes.IndexByte(tree, '\n')])
	var files []treeEntry
	if err := r.walk(tw, "", root, &files); err != nil {
		return err
	}
	return r.writeFiles(tw, files)
}

// walk writes the directories of tree oid, under dir ("" or a path ending
// in /), and appends its files and links to files, named by their paths.
func (r *reader) walk(tw *tar.Writer, dir, oid string, files *[]treeEntry) error {
	_, typ, size, err := r.object(oid)
	if err != nil {
		return err
	}
	switch {
	case typ != "tree":
		return treeError{fmt.Errorf("%q is a %s, not a directory", dir, typ)}
	case size > maxWhole:
		return treeError{fmt.Errorf("%q is a tree of %d bytes, more than git makes", dir, size)}
	}
	// Read whole before anything else is asked of r.
	data, err := r.read(size)
	if err != nil {
		return err
	}
	entries, err := parseTree(data, len(oid)/2)
	if err != nil {
		return treeError{fmt.Errorf("tree %s: %w", oid, err)}
	}
	for _, e := range entries {
		e.name = dir + e.name
		if len(e.name) > maxPath {
			return treeError{fmt.Errorf("%.64q… is a path longer than %d bytes", e.name, maxPath)}
		}
		switch e.mode {
		case 0o40000, 0o160000:
			// A submodule's commit is an empty directory, as git archive
			// writes it.
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: e.name + "/", Mode: 0o755}); err != nil {
				return err
			}
			if e.mode == 0o40000 {
				if err := r.walk(tw, e.name+"/", e.oid, files); err != nil {
					return err
				}
			}
		case 0o100644, 0o100755, 0o120000:
			*files = append(*files, e)
		default:
			return treeError{fmt.Errorf("%q has mode %o, which git does not make", e.name, e.mode)}
		}
	}
	return nil
}

// writeFiles writes files (see walk). Their blobs are asked for all at
// once, and written as the answers come: one round trip to git, not one
// per file.
func (r *reader) writeFiles(tw *tar.Writer, files []treeEntry) error {
	asked := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(r.in)
		for _, f := range files {
			if _, err := w.WriteString(f.oid + "\n"); err != nil {
				asked <- err
				return
			}
		}
		asked <- w.Flush()
	}()
	for _, f := range files {
		if err := r.writeFile(tw, f); err != nil {
			// The caller ends r, which ends the asking too.
			return err
		}
	}
	return <-asked
}

// writeFile writes f, whose blob is r's next answer.
func (r *reader) writeFile(tw *tar.Writer, f treeEntry) error {
	_, typ, size, err := r.answer(f.oid)
	if err != nil {
		return err
	}
	if typ != "blob" {
		return treeError{fmt.Errorf("%q is a %s, not a file", f.name, typ)}
	}
	if f.mode != 0o120000 {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: int64(f.mode & 0o777), Size: size}); err != nil {
			return err
		}
		return r.copyTo(tw, size)
	}
	if size > 4096 {
		return treeError{fmt.Errorf("symlink %q is not a link git makes", f.name)}
	}
	target, err := r.read(size)
	if err != nil {
		return err
	}
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: f.name, Linkname: string(target), Mode: 0o777})
}

// treeEntry is one entry of a tree object.
type treeEntry struct {
	mode uint32
	name string
	oid  string // hex
}

// parseTree parses a tree object: "<octal mode> <name>\0<binary ID>" per
// entry, each ID idLen bytes (the repository's hash's: SHA-1's 20,
// SHA-256's 32). Each name must be one path element.
func parseTree(data []byte, idLen int) ([]treeEntry, error) {
	var out []treeEntry
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			return nil, errors.New("malformed entry")
		}
		mode, err := strconv.ParseUint(string(data[:sp]), 8, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed mode %q", data[:sp])
		}
		data = data[sp+1:]
		nul := bytes.IndexByte(data, 0)
		if nul < 0 || len(data) < nul+1+idLen {
			return nil, errors.New("malformed entry")
		}
		name := string(data[:nul])
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") || path.Clean(name) != name {
			return nil, fmt.Errorf("entry %q is not a file name", name)
		}
		out = append(out, treeEntry{mode: uint32(mode), name: name, oid: fmt.Sprintf("%x", data[nul+1:nul+1+idLen])})
		data = data[nul+1+idLen:]
	}
	return out, nil
}

// isObjectID reports whether s is a full object ID in hex: SHA-1's 40
// digits or SHA-256's 64. Anything else never reaches git cat-file, whose
// requests are lines.
func isObjectID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
