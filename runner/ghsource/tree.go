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

// Bounds on what a pushed commit can make a checkout do; git's own trees
// are far inside them. A tree beyond one is refused whole.
const (
	maxTree    = 16 << 20 // bytes of one tree object, read whole (100,000 entries are about 5 MiB)
	maxPath    = 4096     // bytes of a path: longer ones cannot be made (PATH_MAX); bounds nesting too
	maxEntries = 1 << 20  // files, links and directories of a checkout
	maxBytes   = 4 << 30  // bytes of its files
)

// errMissing is an object the mirror does not have (yet): a fetch may
// bring it. (A reader finds what fetches add after it started: git looks
// for loose objects, and for packs again, whenever one is missing.)
var errMissing = errors.New("not in the mirror")

// reader is one `git cat-file --batch` of a mirror.
type reader struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	gen int // the mirror's generation it reads (mirror.readerGen)
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
	gen := m.readerGen
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
	return &reader{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 64<<10), gen: gen}, nil
}

// done gives r back to m's idle readers, or ends it if m has enough or
// was forgotten since r started.
func (s *Source) done(m *mirror, r *reader) {
	s.mu.Lock()
	if len(m.readers) < maxIdleReaders && r.gen == m.readerGen {
		m.readers = append(m.readers, r)
		r = nil
	}
	s.mu.Unlock()
	if r != nil {
		r.close()
	}
}

// forget ends m's idle readers, and those in use as they are given back:
// m is being made again, or its packs were rewritten (a reader would keep
// the old ones on disk).
func (s *Source) forget(m *mirror) {
	s.mu.Lock()
	idle := m.readers
	m.readers = nil
	m.readerGen++
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

// object asks r for the object whose ID is id and reads the answer.
func (r *reader) object(id string) (typ string, size int64, err error) {
	if _, err := io.WriteString(r.in, id+"\n"); err != nil {
		return "", 0, err
	}
	return r.answer(id)
}

// answer reads the answer to the request for object id: its type and
// size, after which its content, size bytes and a newline, is next in
// r.out. An object git does not find is errMissing.
func (r *reader) answer(id string) (typ string, size int64, err error) {
	line, err := r.out.ReadString('\n')
	if err != nil {
		return "", 0, err
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == id && (f[1] == "missing" || f[1] == "ambiguous"):
		return "", 0, fmt.Errorf("%s: %w", id, errMissing)
	case len(f) != 3:
		return "", 0, fmt.Errorf("git cat-file answered %q", strings.TrimSpace(line))
	}
	size, err = strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 || f[0] != id {
		// Git answers a request for an ID with that ID: anything else is
		// not that object.
		return "", 0, fmt.Errorf("git cat-file answered %q to %s", strings.TrimSpace(line), id)
	}
	return f[1], size, nil
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

// discard passes over the rest of an object's content, n bytes, and the
// newline after it.
func (r *reader) discard(n int64) error {
	if _, err := io.CopyN(io.Discard, r.out, n); err != nil {
		return err
	}
	if b, err := r.out.ReadByte(); err != nil || b != '\n' {
		return errors.New("git cat-file: an object's content is not where its size says")
	}
	return nil
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
// written as files, or that git would not make, is a treeError.
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
	e := &exporter{r: r, tw: tar.NewWriter(w)}
	err = e.commit(sha)
	if err == nil {
		err = e.tw.Close()
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

// exporter writes one commit's tree, one tree object at a time: memory
// holds one tree's entries and the path to it, whatever the commit.
type exporter struct {
	r       *reader
	tw      *tar.Writer
	entries int   // written so far
	bytes   int64 // of files written so far
}

func (e *exporter) commit(sha string) error {
	typ, size, err := e.r.object(sha)
	if err != nil {
		return err
	}
	if typ != "commit" {
		return treeError{fmt.Errorf("%s is a %s, not a commit", sha, typ)}
	}
	// The first line names the tree; the rest (a message of any length)
	// is passed over.
	first, err := e.r.out.ReadSlice('\n')
	if err != nil || int64(len(first)) > size {
		return treeError{fmt.Errorf("%s is not a commit git makes", sha)}
	}
	root, ok := bytes.CutPrefix(bytes.TrimSuffix(first, []byte("\n")), []byte("tree "))
	if !ok || len(root) != len(sha) || !isObjectID(string(root)) {
		return treeError{fmt.Errorf("%s is not a commit git makes", sha)}
	}
	tree := string(root)
	if err := e.r.discard(size - int64(len(first))); err != nil {
		return err
	}
	return e.tree("", tree)
}

// tree writes tree oid under dir ("" or a path ending in /): its files and
// links, asked for all at once and written as the answers come (one round
// trip to git, not one per file), then each of its directories.
func (e *exporter) tree(dir, oid string) error {
	typ, size, err := e.r.object(oid)
	if err != nil {
		return err
	}
	switch {
	case typ != "tree":
		return treeError{fmt.Errorf("%q is a %s, not a directory", dir, typ)}
	case size > maxTree:
		return treeError{fmt.Errorf("%q is a tree of %d bytes, more than twokey writes", dir, size)}
	}
	data, err := e.r.read(size)
	if err != nil {
		return err
	}
	entries, err := parseTree(data, len(oid)/2)
	if err != nil {
		return treeError{fmt.Errorf("%q: %w", dir, err)}
	}
	if e.entries += len(entries); e.entries > maxEntries {
		return treeError{fmt.Errorf("the tree has more than %d entries", maxEntries)}
	}
	var files, dirs []treeEntry
	for _, en := range entries {
		en.name = dir + en.name
		if len(en.name) > maxPath {
			return treeError{fmt.Errorf("%.64q… is a path longer than %d bytes", en.name, maxPath)}
		}
		switch en.mode {
		case 0o40000, 0o160000:
			dirs = append(dirs, en)
		case 0o100644, 0o100664, 0o100755, 0o120000:
			files = append(files, en)
		default:
			return treeError{fmt.Errorf("%q has mode %o, which git does not make", en.name, en.mode)}
		}
	}
	if err := e.files(files); err != nil {
		return err
	}
	for _, d := range dirs {
		// A submodule's commit is an empty directory, as git archive
		// writes it.
		if err := e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name + "/", Mode: 0o755}); err != nil {
			return treeError{err}
		}
		if d.mode == 0o40000 {
			if err := e.tree(d.name+"/", d.oid); err != nil {
				return err
			}
		}
	}
	return nil
}

// files writes files, whose blobs are asked for all at once.
func (e *exporter) files(files []treeEntry) error {
	if len(files) == 0 {
		return nil
	}
	asked := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(e.r.in)
		for _, f := range files {
			if _, err := w.WriteString(f.oid + "\n"); err != nil {
				asked <- err
				return
			}
		}
		asked <- w.Flush()
	}()
	for _, f := range files {
		if err := e.file(f); err != nil {
			// The caller ends the reader, which ends the asking too.
			return err
		}
	}
	return <-asked
}

// file writes f, whose blob is the reader's next answer.
func (e *exporter) file(f treeEntry) error {
	typ, size, err := e.r.answer(f.oid)
	if err != nil {
		return err
	}
	if typ != "blob" {
		return treeError{fmt.Errorf("%q is a %s, not a file", f.name, typ)}
	}
	if e.bytes += size; e.bytes > maxBytes {
		return treeError{fmt.Errorf("the tree's files are more than %d bytes", int64(maxBytes))}
	}
	if f.mode != 0o120000 {
		if err := e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: int64(f.mode & 0o777), Size: size}); err != nil {
			return treeError{err}
		}
		return e.r.copyTo(e.tw, size)
	}
	if size > 4096 {
		return treeError{fmt.Errorf("symlink %q is not a link git makes", f.name)}
	}
	target, err := e.r.read(size)
	if err != nil {
		return err
	}
	if bytes.IndexByte(target, 0) >= 0 {
		return treeError{fmt.Errorf("symlink %q is not a link git makes", f.name)}
	}
	if err := e.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: f.name, Linkname: string(target), Mode: 0o777}); err != nil {
		return treeError{err}
	}
	return nil
}

// treeEntry is one entry of a tree object.
type treeEntry struct {
	mode uint32
	name string
	oid  string // hex
}

// parseTree parses a tree object: "<octal mode> <name>\0<binary ID>" per
// entry, each ID idLen bytes (the repository's hash's: SHA-1's 20,
// SHA-256's 32). Each name must be one path element that git would write
// (see gitWrites), once.
func parseTree(data []byte, idLen int) ([]treeEntry, error) {
	var out []treeEntry
	seen := map[string]bool{}
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
		if !gitWrites(name, uint32(mode)) {
			return nil, fmt.Errorf("entry %q is not a name git writes", name)
		}
		// One name, one entry, whatever each is: a link must never sit
		// where a directory of the same name is written through.
		if seen[name] {
			return nil, fmt.Errorf("entry %q is there twice", name)
		}
		seen[name] = true
		out = append(out, treeEntry{mode: uint32(mode), name: name, oid: fmt.Sprintf("%x", data[nul+1:nul+1+idLen])})
		data = data[nul+1+idLen:]
	}
	return out, nil
}

// gitWrites reports whether git would write an entry named name, of mode
// mode, into a working tree (its verify_path): one path element, never
// .git in any spelling a file system may take for it (case, NTFS's
// trailing dots and spaces and 8.3 name, HFS's ignored characters), and
// no .gitmodules, .gitattributes, .gitignore or .mailmap that is a link.
// A workspace holding a .git would make any git run in it read the pull
// request's configuration.
func gitWrites(name string, mode uint32) bool {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || path.Clean(name) != name {
		return false
	}
	folded := strings.TrimRight(strings.ToLower(strings.Map(func(r rune) rune {
		if hfsIgnored(r) {
			return -1
		}
		return r
	}, name)), ". ")
	if folded == ".git" || folded == "git~1" {
		return false
	}
	if mode == 0o120000 {
		switch folded {
		case ".gitmodules", "gitmod~1", ".gitattributes", ".gitignore", ".mailmap":
			return false
		}
	}
	return true
}

// hfsIgnored reports whether HFS+ ignores r in a file name (git's
// is_hfs_dotgit list).
func hfsIgnored(r rune) bool {
	switch r {
	case 0x200c, 0x200d, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
		0x206a, 0x206b, 0x206c, 0x206d, 0x206e, 0x206f, 0xfeff:
		return true
	}
	return false
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
