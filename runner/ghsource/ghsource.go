// Package ghsource is runner.Source on GitHub: go-github resolves the pull
// request, and git fetches exactly its head commit into a per-repository
// bare mirror, from which the tree is written into a fresh workspace (see
// export) — no full clone, no .git directory for the planned code to read.
package ghsource

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v89/github"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config/secret"
	"github.com/twokey/twokey/runner"
)

// Options configure a Source.
type Options struct {
	APIURL     string        // e.g. https://api.github.com/ or https://ghe.example/api/v3/
	Token      secret.Secret // optional; sent to the API and, as a header, to git
	MirrorDir  string        // where bare mirrors live
	Git        string        // git binary; default "git"
	HTTPClient *http.Client
	// App, if set, authenticates as a GitHub App's installation instead of
	// with Token: the installation's tokens, renewed before they expire
	// (they live an hour), go to the API and to git, and Checks reports
	// true.
	App *App
	// Prefetch starts fetching a pull request's head into its mirror as
	// soon as Resolve has read the pull request, while the plan is set up
	// (its authors read, the lock taken, the message posted), or, for a
	// pull request the mirror has never had, while Resolve reads it;
	// Checkout then finds the commit there. For a serve that runs its plans
	// itself.
	Prefetch bool
	// MergeableBackoff is the first wait before asking GitHub again about a
	// pull request whose mergeability it is still computing; each further
	// wait doubles. Default 500ms.
	MergeableBackoff time.Duration
}

// App is a GitHub App installation.
type App struct {
	ID, InstallationID int64
	PrivateKey         secret.Secret // PEM, as GitHub issues it
}

// Source is a runner.Source.
type Source struct {
	o   Options
	gh  *github.Client
	app *ghinstallation.Transport // nil without an App

	mu      sync.Mutex
	mirrors map[string]*mirror // by repository
}

// mirror is one repository's bare mirror.
type mirror struct {
	path string
	mu   lock // held to change it: one fetch at a time
	// prefetches holds, for each commit (or pull request ref) being
	// prefetched, what closes once it has been fetched (or could not be);
	// guarded by Source.mu.
	prefetches map[string]chan struct{}
	// cloneURL is the repository's, once one of its pull requests has
	// been read, and tried holds the pull requests fetchEarly was asked
	// for; guarded by Source.mu.
	cloneURL string
	tried    map[int]bool
	// readers are the mirror's idle tree readers (see reader), of
	// generation readerGen (see forget); guarded by Source.mu.
	readers   []*reader
	readerGen int
}

// lock is a mutex whose waiters can give up.
type lock chan struct{}

func (l lock) Lock()   { l <- struct{}{} }
func (l lock) Unlock() { <-l }

// LockContext takes l, or gives up with ctx's error once ctx ends.
func (l lock) LockContext(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ runner.Source = (*Source)(nil)

// New returns a Source.
func New(o Options) (*Source, error) {
	if o.MirrorDir == "" {
		return nil, errors.New("ghsource: MirrorDir is required")
	}
	if o.Git == "" {
		o.Git = "git"
	}
	if o.MergeableBackoff <= 0 {
		o.MergeableBackoff = 500 * time.Millisecond
	}
	opts := []github.ClientOptionsFunc{github.WithURLs(&o.APIURL, &o.APIURL)}
	var app *ghinstallation.Transport
	switch {
	case o.App != nil:
		base := http.DefaultTransport
		client := &http.Client{}
		if o.HTTPClient != nil {
			*client = *o.HTTPClient
			if o.HTTPClient.Transport != nil {
				base = o.HTTPClient.Transport
			}
		}
		var err error
		if app, err = ghinstallation.New(base, o.App.ID, o.App.InstallationID, []byte(o.App.PrivateKey.Reveal())); err != nil {
			return nil, fmt.Errorf("github app %d: private key: %w", o.App.ID, err)
		}
		app.BaseURL = strings.TrimSuffix(o.APIURL, "/")
		client.Transport = app
		opts = append(opts, github.WithHTTPClient(client))
	case o.HTTPClient != nil:
		opts = append(opts, github.WithHTTPClient(o.HTTPClient))
	}
	if o.Token != "" && o.App == nil {
		opts = append(opts, github.WithAuthToken(o.Token.Reveal()))
	}
	gh, err := github.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("github client: %w", err)
	}
	return &Source{o: o, gh: gh, app: app, mirrors: map[string]*mirror{}}, nil
}

// token is what authenticates git: the installation's current token with
// an App (renewed when it is near its end), else the configured token.
func (s *Source) token(ctx context.Context) (string, error) {
	if s.app == nil {
		return s.o.Token.Reveal(), nil
	}
	t, err := s.app.Token(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: github app installation token: %w", runner.ErrSource, err)
	}
	return t, nil
}

// Resolve reads a ref of repo: an open pull request's head, or a commit or
// tag that the default branch contains.
func (s *Source) Resolve(ctx context.Context, repo string, ref runner.Ref) (runner.Revision, error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok {
		return runner.Revision{}, fmt.Errorf("repository %q is not owner/name", repo)
	}
	if ref.PR > 0 {
		return s.resolvePR(ctx, owner, name, repo, ref.PR)
	}
	r, resp, err := s.gh.Repositories.Get(ctx, owner, name)
	if err != nil {
		return runner.Revision{}, s.apiError(resp, err, repo, runner.ErrRefNotFound)
	}
	branch := r.GetDefaultBranch()
	sha := ref.SHA
	if ref == (runner.Ref{}) {
		sha = branch // the branch's head
	}
	if ref.Tag != "" {
		if sha, err = s.tagCommit(ctx, owner, name, ref.Tag); err != nil {
			return runner.Revision{}, err
		}
	}
	// The commit must be the default branch's head or behind it.
	cmp, resp, err := s.gh.Repositories.CompareCommits(ctx, owner, name, sha, branch, nil)
	if err != nil {
		return runner.Revision{}, s.apiError(resp, err, repo+"@"+sha, runner.ErrRefNotFound)
	}
	if st := cmp.GetStatus(); st != "ahead" && st != "identical" {
		return runner.Revision{}, fmt.Errorf("%w: %s is not in the history of %s", runner.ErrNotDefaultBranch, shortSHA(sha), branch)
	}
	if cmp.GetBaseCommit().GetSHA() != "" {
		sha = cmp.GetBaseCommit().GetSHA() // the full SHA of the compared commit
	}
	return runner.Revision{Repo: repo, Ref: ref, SHA: sha, CloneURL: r.GetCloneURL(), Branch: branch,
		Title: strings.SplitN(cmp.GetBaseCommit().GetCommit().GetMessage(), "\n", 2)[0]}, nil
}

func (s *Source) resolvePR(ctx context.Context, owner, name, repo string, pr int) (runner.Revision, error) {
	// The commits are read beside the pull request: one round trip to
	// GitHub rather than two.
	type listed struct {
		commits []*github.RepositoryCommit
		err     error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := s.mirrorOf(repo)
	early := s.fetchEarly(ctx, m, repo, pr)
	commits := make(chan listed, 1)
	go func() {
		c, err := s.commits(ctx, owner, name, pr)
		commits <- listed{c, err}
	}()
	p, resp, err := s.gh.PullRequests.Get(ctx, owner, name, pr)
	if err != nil {
		return runner.Revision{}, s.apiError(resp, err, fmt.Sprintf("%s#%d", repo, pr), runner.ErrPRNotFound)
	}
	if p.GetState() != "open" {
		state := p.GetState()
		if p.GetMerged() {
			state = "merged"
		}
		return runner.Revision{}, fmt.Errorf("%w: %s#%d is %s", runner.ErrPRClosed, repo, pr, state)
	}
	sha := p.GetHead().GetSHA()
	cloneURL := p.GetBase().GetRepo().GetCloneURL()
	if len(sha) != 40 || cloneURL == "" {
		return runner.Revision{}, fmt.Errorf("%w: %s#%d has no head commit or clone URL", runner.ErrSource, repo, pr)
	}
	s.mu.Lock()
	m.cloneURL = cloneURL
	s.mu.Unlock()
	// A head in another repository (or in one since deleted) is a fork's.
	fork := !strings.EqualFold(p.GetHead().GetRepo().GetFullName(), p.GetBase().GetRepo().GetFullName())
	if s.o.Prefetch && !fork {
		rev := runner.Revision{Repo: repo, PR: pr, SHA: sha, CloneURL: cloneURL}
		if end := s.prefetching(m, sha); end != nil {
			go s.prefetch(context.WithoutCancel(ctx), rev, end, early)
		}
	}
	l := <-commits
	if l.err != nil {
		return runner.Revision{}, l.err
	}
	authors := authorsOf(p, l.commits)
	return runner.Revision{Repo: repo, Ref: runner.Ref{PR: pr}, PR: pr, SHA: sha, CloneURL: cloneURL,
		Title: p.GetTitle(), URL: p.GetHTMLURL(), Fork: fork, Authors: authors}, nil
}

// commits lists a pull request's commits, every page.
func (s *Source) commits(ctx context.Context, owner, name string, pr int) ([]*github.RepositoryCommit, error) {
	var out []*github.RepositoryCommit
	opts := &github.ListOptions{PerPage: 100}
	for {
		commits, resp, err := s.gh.PullRequests.ListCommits(ctx, owner, name, pr, opts)
		if err != nil {
			return nil, s.apiError(resp, err, fmt.Sprintf("%s/%s#%d commits", owner, name, pr), runner.ErrPRNotFound)
		}
		out = append(out, commits...)
		if resp.NextPage == 0 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// authorsOf lists who wrote and committed a pull request: its author, and
// each commit's author, committer and Co-authored-by trailers, once each.
func authorsOf(p *github.PullRequest, commits []*github.RepositoryCommit) []approvals.Author {
	var out []approvals.Author
	add := func(a approvals.Author) {
		if a.Login == "" && a.ID == 0 && a.Email == "" {
			return
		}
		for _, b := range out {
			if a.ID != 0 && a.ID == b.ID || a.Login != "" && strings.EqualFold(a.Login, b.Login) || a.Email != "" && strings.EqualFold(a.Email, b.Email) {
				return
			}
		}
		out = append(out, a)
	}
	add(approvals.Author{Login: p.GetUser().GetLogin(), ID: p.GetUser().GetID(), As: "PR author"})
	person := func(u *github.User, c *github.CommitAuthor, as string) {
		a := approvals.ByEmail(c.GetEmail(), as)
		if u.GetLogin() != "" {
			a.Login, a.ID = u.GetLogin(), u.GetID()
		}
		add(a)
	}
	for _, c := range commits {
		person(c.GetAuthor(), c.GetCommit().GetAuthor(), "commit author")
		person(c.GetCommitter(), c.GetCommit().GetCommitter(), "committer")
		for _, a := range approvals.CoAuthors(c.GetCommit().GetMessage()) {
			add(a)
		}
	}
	return out
}

// tagCommit resolves a tag, annotated or not, to its commit.
func (s *Source) tagCommit(ctx context.Context, owner, name, tag string) (string, error) {
	ref, resp, err := s.gh.Git.GetRef(ctx, owner, name, "tags/"+tag)
	if err != nil {
		return "", s.apiError(resp, err, "tag "+tag, runner.ErrRefNotFound)
	}
	obj := ref.GetObject()
	if obj.GetType() == "tag" {
		t, resp, err := s.gh.Git.GetTag(ctx, owner, name, obj.GetSHA())
		if err != nil {
			return "", s.apiError(resp, err, "tag "+tag, runner.ErrRefNotFound)
		}
		obj = t.GetObject()
	}
	if obj.GetType() != "commit" {
		return "", fmt.Errorf("%w: tag %s points at a %s", runner.ErrRefNotFound, tag, obj.GetType())
	}
	return obj.GetSHA(), nil
}

// apiError tells "not there" (404) from GitHub being unavailable.
func (s *Source) apiError(resp *github.Response, err error, what string, notFound error) error {
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %s", notFound, what)
	}
	return fmt.Errorf("%w: github: %w", runner.ErrSource, err)
}

func shortSHA(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// mirrorOf returns repo's mirror.
func (s *Source) mirrorOf(repo string) *mirror {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mirrors[repo]
	if !ok {
		m = &mirror{path: filepath.Join(s.o.MirrorDir, filepath.FromSlash(repo)+".git"), mu: make(lock, 1)}
		s.mirrors[repo] = m
	}
	return m
}

// setUp makes m's repository if it is not there (or no longer); m.mu must
// be held.
func (s *Source) setUp(ctx context.Context, rev runner.Revision, m *mirror) error {
	if m.made() {
		return nil
	}
	s.forget(m)
	if err := os.MkdirAll(m.path, 0o700); err != nil {
		return err
	}
	_, err := s.git(ctx, rev.CloneURL, "init", "-q", "--bare", m.path)
	return err
}

// made reports whether m's repository is there.
func (m *mirror) made() bool {
	_, err := os.Stat(filepath.Join(m.path, "HEAD"))
	return err == nil
}

// fetch fetches the ref rev is on (refName) into mirror, wherever it
// moved: a pull request's head may have been force-pushed.
func (s *Source) fetch(ctx context.Context, rev runner.Revision, mirror string) error {
	if _, err := s.git(ctx, rev.CloneURL, "-C", mirror, "fetch", "-q", "--no-tags", "--no-auto-gc", rev.CloneURL, "+"+refName(rev)+":"+refName(rev)); err != nil {
		return fmt.Errorf("%w: %w", runner.ErrSource, err)
	}
	return nil
}

// refName is the ref rev is on: GitHub publishes every pull request's head
// as refs/pull/<n>/head; a rollback's commit is on the default branch.
func refName(rev runner.Revision) string {
	if rev.PR == 0 {
		return "refs/heads/" + rev.Branch
	}
	return fmt.Sprintf("refs/pull/%d/head", rev.PR)
}

// hasRef reports whether m's ref for rev, loose or packed, is rev.SHA
// already. It may miss a commit the mirror has (on another ref, say):
// that costs a fetch that brings nothing.
func hasRef(m *mirror, rev runner.Revision) bool {
	return rev.SHA != "" && refAt(m, rev) == rev.SHA
}

// refAt is the commit m's ref for rev, loose or packed, points at; "" if
// m has no such ref.
func refAt(m *mirror, rev runner.Revision) string {
	ref := refName(rev)
	if b, err := os.ReadFile(filepath.Join(m.path, filepath.FromSlash(ref))); err == nil {
		return strings.TrimSpace(string(b))
	}
	packed, err := os.ReadFile(filepath.Join(m.path, "packed-refs"))
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(packed), "\n") {
		if sha, name, ok := strings.Cut(line, " "); ok && name == ref {
			return sha
		}
	}
	return ""
}

// maxTried bounds the pull requests a mirror remembers fetchEarly was asked
// for: any number a planner types is one.
const maxTried = 4096

// fetchEarly starts fetching pull request pr's head into m while the pull
// request is read: once per pull request (a number that is no pull
// request's is not tried again), where m has never had a head of it (most
// likely, the head to plan is then not in m either) and the repository's
// clone URL is known from an earlier read. GitHub publishes every pull
// request's head, a fork's too, as refs/pull/<n>/head of the repository:
// the number is all it takes. Nothing is taken on trust: the checkout is
// of the head the pull request's read names, which is fetched again if
// this brought another (a push in between; that fetch then also waits
// for this one's gc). A closed pull request's head is fetched for
// nothing. fetchEarly returns what closes once the fetch has ended, or
// nil.
func (s *Source) fetchEarly(ctx context.Context, m *mirror, repo string, pr int) <-chan struct{} {
	if !s.o.Prefetch {
		return nil
	}
	s.mu.Lock()
	rev, tried := runner.Revision{Repo: repo, PR: pr, CloneURL: m.cloneURL}, m.tried[pr]
	if m.tried == nil || len(m.tried) >= maxTried {
		// Forgetting costs at most one more early fetch per pull request.
		m.tried = map[int]bool{}
	}
	m.tried[pr] = true
	s.mu.Unlock()
	if rev.CloneURL == "" || tried || refAt(m, rev) != "" {
		return nil
	}
	key := refName(rev)
	if end := s.prefetching(m, key); end != nil {
		go s.prefetch(context.WithoutCancel(ctx), rev, end, nil)
	}
	return s.prefetched(m, key)
}

// prefetching records that key, a commit or a ref, is being prefetched
// into m, and returns what ends that; nil if it is already under way.
func (s *Source) prefetching(m *mirror, key string) (end func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := m.prefetches[key]; ok {
		return nil
	}
	if m.prefetches == nil {
		m.prefetches = map[string]chan struct{}{}
	}
	done := make(chan struct{})
	m.prefetches[key] = done
	return sync.OnceFunc(func() {
		s.mu.Lock()
		delete(m.prefetches, key)
		s.mu.Unlock()
		close(done)
	})
}

// prefetched is what closes once the prefetch of key into m has ended; nil
// if none is under way.
func (s *Source) prefetched(m *mirror, key string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return m.prefetches[key]
}

// prefetch fetches a pull request's head into its mirror, unless the
// mirror has the commit already (Options.Prefetch), and ends by calling
// end. If after is not nil, it first waits for after to close: the head's
// fetch that started while the pull request was read (fetchEarly), which
// most likely brought this commit; its two minutes include that wait.
// Whatever goes wrong, Checkout fetches again. git's automatic gc runs
// after end: a checkout waiting for the commit does not wait for it.
func (s *Source) prefetch(ctx context.Context, rev runner.Revision, end func(), after <-chan struct{}) {
	defer end()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	m := s.mirrorOf(rev.Repo)
	if after != nil {
		select {
		case <-after:
		case <-ctx.Done():
			return
		}
		if hasRef(m, rev) {
			return
		}
	}
	if m.mu.LockContext(ctx) != nil {
		return
	}
	defer m.mu.Unlock()
	if s.setUp(ctx, rev, m) != nil || hasRef(m, rev) {
		return
	}
	err := s.fetch(ctx, rev, m.path)
	end()
	if err == nil {
		s.gc(ctx, rev, m)
	}
}

// gc is git's automatic gc of m, in the foreground so that it ends before
// the lock it runs under (m.mu must be held): git's own, after a fetch and
// detached, would race the next fetch.
func (s *Source) gc(ctx context.Context, rev runner.Revision, m *mirror) {
	before := packs(m)
	// A gc that fails leaves the mirror as it was: readable.
	_, _ = s.git(ctx, rev.CloneURL, "-C", m.path, "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet")
	if !slices.Equal(before, packs(m)) {
		s.forget(m) // readers would keep the packs gc removed on disk
	}
}

// packs lists m's pack files.
func packs(m *mirror) []string {
	names, _ := filepath.Glob(filepath.Join(m.path, "objects", "pack", "*.pack"))
	return names
}

// Checkout fetches rev.SHA into the repository's mirror and writes its tree
// into dst.
func (s *Source) Checkout(ctx context.Context, rev runner.Revision, dst string) error {
	m := s.mirrorOf(rev.Repo)
	// A commit the mirror has (a re-plan, an apply, a prefetched pull
	// request, another environment's plan of it) is read without waiting
	// for a fetch: fetches only add objects. A commit being prefetched is
	// read once it is in (its ref is set once all its objects are), and
	// one the mirror lacks is fetched under the lock.
	if done := s.prefetched(m, rev.SHA); done != nil && !hasRef(m, rev) {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.made() {
		if err := s.writeTree(ctx, rev, m, dst); err == nil || final(ctx, err) {
			return err
		}
	}
	return s.fetchInto(ctx, rev, m, dst)
}

// treeError is a tree untar refused or could not write: fetching again
// would not change it.
type treeError struct{ err error }

func (e treeError) Error() string { return e.err.Error() }
func (e treeError) Unwrap() error { return e.err }

// final reports whether a writeTree err is the checkout's outcome, rather
// than a commit the mirror may lack.
func final(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.As(err, new(treeError))
}

// writeTree writes the commit's tree from m into dst as export streams it.
// A failed one leaves nothing: dst is removed. (A stream cut short between
// two files untars without error; export's error says so.)
func (s *Source) writeTree(ctx context.Context, rev runner.Revision, m *mirror, dst string) error {
	pr, pw := io.Pipe()
	untarred := make(chan error, 1)
	go func() {
		err := untar(pr, dst)
		_, _ = io.Copy(io.Discard, pr) // export writes to the end, whatever untar made of it
		untarred <- err
	}()
	err := s.export(ctx, m, rev.SHA, pw)
	pw.CloseWithError(err)
	if uerr := <-untarred; err == nil && uerr != nil {
		err = treeError{uerr}
	}
	if err != nil {
		_ = os.RemoveAll(dst)
	}
	return err
}

// fetchInto writes the commit's tree from m into dst, fetched into m first
// if it is not there.
func (s *Source) fetchInto(ctx context.Context, rev runner.Revision, m *mirror, dst string) error {
	// Behind another fetch (one that stalls, say), no longer than ctx allows.
	if err := m.mu.LockContext(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := s.setUp(ctx, rev, m); err != nil {
		return err
	}
	if err := s.writeTree(ctx, rev, m, dst); err == nil || final(ctx, err) {
		return err
	}
	if err := s.fetch(ctx, rev, m.path); err != nil {
		return err
	}
	defer s.gc(ctx, rev, m)
	if err := s.writeTree(ctx, rev, m, dst); err == nil || final(ctx, err) {
		return err
	}
	// The pull request moved on since it was resolved; ask for the commit itself.
	if _, err := s.git(ctx, rev.CloneURL, "-C", m.path, "fetch", "-q", "--no-tags", "--no-auto-gc", rev.CloneURL, rev.SHA); err != nil {
		return fmt.Errorf("%w: commit %s is not in %s", runner.ErrSource, rev.SHA, rev.Repo)
	}
	return s.writeTree(ctx, rev, m, dst)
}

// git runs git with an environment built from scratch. The token, if any,
// travels as an HTTP header scoped to the clone URL's origin, set through
// GIT_CONFIG_* variables: never in a URL, an argument or a log line.
func (s *Source) git(ctx context.Context, cloneURL string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	if err := s.gitTo(ctx, cloneURL, &out, args...); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// gitEnv is the environment git runs with: built from scratch, with no
// system or user configuration.
func (s *Source) gitEnv() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + s.o.MirrorDir,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
	}
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// gitTo is git, writing its output to stdout.
func (s *Source) gitTo(ctx context.Context, cloneURL string, stdout io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, s.o.Git, args...)
	cmd.Env = s.gitEnv()
	u, err := url.Parse(cloneURL)
	remote := err == nil && (u.Scheme == "https" || u.Scheme == "http")
	var token string
	if remote {
		if token, err = s.token(ctx); err != nil {
			return err
		}
	}
	if remote && token != "" {
		basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
		cmd.Env = append(cmd.Env, "GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http."+u.Scheme+"://"+u.Host+"/.extraheader",
			"GIT_CONFIG_VALUE_0=Authorization: Basic "+basic)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	// git runs helpers (remote-http, upload-pack) that outlive it if only it
	// is killed, holding its output open; an ended ctx kills them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		msg := runner.Redact(strings.TrimSpace(stderr.String()), s.o.Token.Reveal(), token)
		return fmt.Errorf("git %s: %w: %s", args[len(args)-min(len(args), 2)], err, msg)
	}
	return nil
}

// untar writes a tar stream into dst, refusing anything that would land
// outside it.
func untar(r io.Reader, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var links []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// Each link's target was local by its text; followed through
			// the other links, it must still be, within one budget for
			// the whole tree.
			budget := maxLinkSteps
			for _, l := range links {
				if !resolvesInside(dst, l, &budget) {
					return fmt.Errorf("symlink %q, through other links, points outside the workspace or takes too many steps to follow", filepath.ToSlash(l))
				}
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tree: %w", err)
		}
		name := filepath.FromSlash(strings.TrimSuffix(h.Name, "/"))
		if name == "" || name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("tree entry %q escapes the workspace", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := root.MkdirAll(filepath.Dir(name), 0o700); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode)&0o700|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			target := filepath.Join(filepath.Dir(name), h.Linkname)
			if filepath.IsAbs(h.Linkname) || !filepath.IsLocal(target) {
				return fmt.Errorf("symlink %q points outside the workspace", h.Name)
			}
			if err := root.MkdirAll(filepath.Dir(name), 0o700); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
			links = append(links, name)
		default:
			// pax headers and the like carry no files.
		}
	}
}

// UpsertComment writes a pull request's comment: it creates one when id is
// 0, and edits comment id in place otherwise. It returns the comment's ID.
func (s *Source) UpsertComment(ctx context.Context, repo string, pr int, id int64, body string) (int64, error) {
	owner, name, _ := strings.Cut(repo, "/")
	if id != 0 {
		c, _, err := s.gh.Issues.EditComment(ctx, owner, name, id, &github.IssueComment{Body: &body})
		if err != nil {
			return id, fmt.Errorf("%w: edit comment %d on %s#%d: %w", runner.ErrSource, id, repo, pr, err)
		}
		return c.GetID(), nil
	}
	c, _, err := s.gh.Issues.CreateComment(ctx, owner, name, pr, &github.IssueComment{Body: &body})
	if err != nil {
		return 0, fmt.Errorf("%w: comment on %s#%d: %w", runner.ErrSource, repo, pr, err)
	}
	return c.GetID(), nil
}

// SetStatus sets a commit status (state: pending, success, failure, error).
func (s *Source) SetStatus(ctx context.Context, repo, sha, context, state, description, targetURL string) error {
	owner, name, _ := strings.Cut(repo, "/")
	if r := []rune(description); len(r) > 140 { // GitHub's limit
		description = string(r[:139]) + "…"
	}
	st := github.RepoStatus{State: &state, Context: &context, Description: &description}
	if targetURL != "" {
		st.TargetURL = &targetURL
	}
	if _, _, err := s.gh.Repositories.CreateStatus(ctx, owner, name, sha, st); err != nil {
		return fmt.Errorf("%w: status %s on %s@%s: %w", runner.ErrSource, context, repo, shortSHA(sha), err)
	}
	return nil
}

// maxLinkHops bounds the links resolvesInside follows for one path, as
// the kernel's own limit does.
const maxLinkHops = 40

// maxLinkSteps bounds the path components resolvesInside looks at for a
// whole tree: a tree of many long chained links would otherwise take
// minutes to check.
const maxLinkSteps = 1 << 17

// resolvesInside reports whether rel, a path under root, stays under root
// when followed as the kernel would, component by component, each link
// from where it is. What does not exist yet is taken as written. Each
// component looked at takes one step of budget; none left is false.
func resolvesInside(root, rel string, budget *int) bool {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	var at []string // where the walk is, under root
	for hops := 0; len(parts) > 0; {
		p := parts[0]
		parts = parts[1:]
		if *budget--; *budget < 0 {
			return false
		}
		switch p {
		case "", ".":
			continue
		case "..":
			if len(at) == 0 {
				return false
			}
			at = at[:len(at)-1]
			continue
		}
		next := filepath.Join(root, filepath.Join(append(at, p)...))
		st, err := os.Lstat(next)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			at = append(at, p)
			continue
		}
		target, err := os.Readlink(next)
		if hops++; err != nil || hops > maxLinkHops || filepath.IsAbs(target) {
			return false
		}
		parts = append(strings.Split(filepath.ToSlash(target), "/"), parts...)
	}
	return true
}
