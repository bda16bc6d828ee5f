// Package ghsim is a small GitHub REST API for tests and the demo: the
// endpoints twokey calls, answered from in-memory repositories whose clone
// URLs point at local git repositories. The real go-github client talks to
// it. Every request is recorded, and the server can be told to fail.
package ghsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Pull is a pull request.
type Pull struct {
	Number  int
	State   string // open, closed
	Merged  bool
	HeadSHA string
	HeadRef string
	BaseRef string
	Title   string
	User    string // the author's login; default octocat
	// HeadRepo is where the head branch lives, owner/name; "" is the
	// repository itself, anything else a fork.
	HeadRepo string
	// MergeableState is GitHub's mergeable_state: "" is clean; "dirty"
	// (conflicts) makes mergeable false; "unknown" makes it null (still
	// computing); anything else (blocked, behind, unstable) leaves it true.
	MergeableState string
	// DismissStaleReviews dismisses approvals when PushHead moves the head,
	// as the branch protection setting does.
	DismissStaleReviews bool
	// Files, if set, are the changed files GET …/pulls/{n}/files lists;
	// nil lists the diff between the base branch and the head.
	Files []File

	unknownReads int // answer mergeable null this many more times
}

// User is a GitHub account. Commits whose author or committer address is
// one of Emails are attributed to it, as GitHub does.
type User struct {
	Login  string
	ID     int64
	Emails []string
}

// AddUser registers an account.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, u)
}

// userBy returns the account with login, or with email; nil if none.
func (s *Server) userBy(login, email string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if login != "" && strings.EqualFold(u.Login, login) || email != "" && slices.ContainsFunc(u.Emails, func(e string) bool { return strings.EqualFold(e, email) }) {
			return map[string]any{"login": u.Login, "id": u.ID, "type": "User"}
		}
	}
	if login != "" {
		return map[string]any{"login": login, "id": 0, "type": "User"}
	}
	return nil
}

// Request is one recorded API call.
type Request struct {
	Method, Path string
	Auth         string // the Authorization header
	Body         string
}

// Server is the fake API. Mount it at the root of an http server and give
// go-github "<url>/api/v3/" as its base URL.
type Server struct {
	// Token, when set, is the only bearer token accepted.
	Token string

	mu         sync.Mutex
	repos      map[string]*repo
	users      []User
	teams      map[string][]string // "org/slug" → member logins
	requests   []Request
	failing    int    // answer this many more requests with 500
	failOn     string // answer every request whose path contains this with 500
	writesDown bool   // answer every write with 502

	// OAuth device flow (device.go).
	ClientID      string        // the only OAuth app client ID accepted; default "Iv1.twokey"
	DeviceExpires time.Duration // how long a device code lives; default 15m
	devices       map[string]*device
	userTokens    map[string]string // OAuth token → login

	// GitHub Apps (apps.go).
	apps               []App
	installationTokens map[string]installationToken
	nextCheckRun       int64
	// InstallationTokenTTL is how long an installation token lives;
	// default an hour, as on GitHub.
	InstallationTokenTTL time.Duration
	// GitOverHTTP serves each repository's git over HTTP at
	// /<owner>/<name>.git, to token holders only, and gives that as its
	// clone URL.
	GitOverHTTP bool
}

type repo struct {
	cloneURL  string
	pulls     map[int]*Pull
	reviews   map[int][]Review
	perms     map[string]string // lower-case login → admin, write, read, none
	comments  []Comment
	statuses  []Status
	checkRuns []*CheckRun
	fixed     sync.Map // a question about fixed commits → git's answer (see fixedGit)
}

// Comment is a comment on a pull request, with every body it has had.
type Comment struct {
	ID     int64
	PR     int
	Bodies []string // the first is the created body; each edit appends
}

// Status is one commit status, in the order they were set.
type Status struct {
	SHA, Context, State, Description, TargetURL string
}

// Comments returns the comments on a repository's pull requests.
func (s *Server) Comments(fullName string) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.repos[fullName].comments {
		c.Bodies = append([]string(nil), c.Bodies...)
		out = append(out, c)
	}
	return out
}

// Statuses returns every commit status set, in order.
func (s *Server) Statuses(fullName string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.repos[fullName].statuses...)
}

// New returns an empty server.
func New() *Server {
	return &Server{repos: map[string]*repo{}, devices: map[string]*device{}, userTokens: map[string]string{}, teams: map[string][]string{},
		installationTokens: map[string]installationToken{}}
}

// AddRepo registers owner/name with the URL git clones it from.
func (s *Server) AddRepo(fullName, cloneURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[fullName] = &repo{cloneURL: cloneURL, pulls: map[int]*Pull{}, reviews: map[int][]Review{}, perms: map[string]string{}}
}

// SetPull creates or replaces a pull request.
func (s *Server) SetPull(fullName string, p Pull) {
	s.mu.Lock()
	if p.State == "" {
		p.State = "open"
	}
	if p.BaseRef == "" {
		p.BaseRef = "main"
	}
	if p.User == "" {
		p.User = "octocat"
	}
	rp := s.repos[fullName]
	rp.pulls[p.Number] = &p
	s.mu.Unlock()
	rp.workOut(p)
}

// Fail makes the next n requests answer 500.
func (s *Server) Fail(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = n
}

// FailOn makes every request whose path contains part answer 500, until
// called with "": one endpoint of GitHub is down.
func (s *Server) FailOn(part string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failOn = part
}

// FailWrites makes every write (comments, statuses) answer 502 until
// called with false: GitHub is up for reading, down for writing.
func (s *Server) FailWrites(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writesDown = down
}

// Requests returns every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, ".git/") && !strings.HasPrefix(r.URL.Path, "/api/") {
		// git over HTTP: the body is git's, left for git to read.
		s.mu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization")})
		s.mu.Unlock()
		if s.serveGit(w, r) {
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Body: string(body)})
	failing := s.failing > 0 || s.writesDown && r.Method != http.MethodGet || s.failOn != "" && strings.Contains(r.URL.Path, s.failOn)
	if s.failing > 0 {
		s.failing--
	}
	s.mu.Unlock()

	if failing {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"message": "Server Error"})
		return
	}
	if s.serveDeviceFlow(w, r, body) {
		return
	}
	if s.serveApp(w, r) {
		return
	}
	if !s.authorized(r.Header.Get("Authorization")) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	if s.serveTeams(w, r) {
		return
	}
	parts := strings.SplitN(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v3"), "/"), "/", 4)
	if len(parts) < 3 || parts[0] != "repos" {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	fullName, rest := parts[1]+"/"+parts[2], ""
	if len(parts) == 4 {
		rest = parts[3]
	}
	s.mu.Lock()
	rp := s.repos[fullName]
	s.mu.Unlock()
	if rp == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	if s.checkRuns(w, r, rp, rest, body) {
		return
	}
	if r.Method != http.MethodGet {
		s.write(w, r.Method, fullName, rest, body)
		return
	}
	switch {
	case rest == "":
		writeJSON(w, http.StatusOK, map[string]any{"full_name": fullName, "default_branch": "main", "clone_url": s.cloneURL(r, rp, fullName)})
	case strings.HasPrefix(rest, "pulls/") && strings.HasSuffix(rest, "/reviews"):
		s.pullReviews(w, r, fullName, strings.TrimSuffix(strings.TrimPrefix(rest, "pulls/"), "/reviews"))
	case strings.HasPrefix(rest, "pulls/") && strings.HasSuffix(rest, "/files"):
		s.pullFiles(w, r, rp, fullName, strings.TrimSuffix(strings.TrimPrefix(rest, "pulls/"), "/files"))
	case strings.HasPrefix(rest, "collaborators/") && strings.HasSuffix(rest, "/permission"):
		s.permission(w, rp, strings.TrimSuffix(strings.TrimPrefix(rest, "collaborators/"), "/permission"))
	case strings.HasPrefix(rest, "contents/"):
		s.contents(w, rp, strings.TrimPrefix(rest, "contents/"), r.URL.Query().Get("ref"))
	case strings.HasPrefix(rest, "pulls/") && strings.HasSuffix(rest, "/commits"):
		s.pullCommits(w, r, rp, fullName, strings.TrimSuffix(strings.TrimPrefix(rest, "pulls/"), "/commits"))
	case strings.HasPrefix(rest, "pulls/"):
		s.getPull(w, r, fullName, strings.TrimPrefix(rest, "pulls/"))
	case strings.HasPrefix(rest, "compare/"):
		base, head, _ := strings.Cut(strings.TrimPrefix(rest, "compare/"), "...")
		s.compare(w, rp, base, head)
	case strings.HasPrefix(rest, "git/ref/tags/"):
		s.tagRef(w, rp, strings.TrimPrefix(rest, "git/ref/tags/"))
	case strings.HasPrefix(rest, "git/tags/"):
		s.tagObject(w, rp, strings.TrimPrefix(rest, "git/tags/"))
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
	}
}

// gitDir is the local repository behind a file:// clone URL.
func (rp *repo) gitDir() string { return strings.TrimPrefix(rp.cloneURL, "file://") }

func (rp *repo) git(args ...string) (string, error) {
	out, err := rp.gitRaw(args...)
	return strings.TrimSpace(string(out)), err
}

// fixedGit is git's answer to a question about commits, asked once where
// each is a full SHA (the answer cannot change then), as GitHub works out
// a pull request's diff and commits as it is pushed, not as it is read. A
// question git could not answer is asked again.
func (rp *repo) fixedGit(commits []string, args ...string) (string, error) {
	if slices.ContainsFunc(commits, func(c string) bool { return !isSHA(c) }) {
		return rp.git(args...)
	}
	key := strings.Join(args, "\x00")
	if out, ok := rp.fixed.Load(key); ok {
		return out.(string), nil
	}
	out, err := rp.git(args...)
	if err == nil {
		rp.fixed.Store(key, out)
	}
	return out, err
}

// commitOf is the commit ref (a branch, or a full SHA) is at, read from
// the repository's files without running git; "" if it is neither.
func (rp *repo) commitOf(ref string) string {
	if isSHA(ref) {
		return ref
	}
	name := "refs/heads/" + ref
	if b, err := os.ReadFile(filepath.Join(rp.gitDir(), filepath.FromSlash(name))); err == nil {
		return strings.TrimSpace(string(b))
	}
	packed, _ := os.ReadFile(filepath.Join(rp.gitDir(), "packed-refs"))
	for line := range strings.SplitSeq(string(packed), "\n") {
		if sha, n, ok := strings.Cut(line, " "); ok && n == name {
			return sha
		}
	}
	return ""
}

func isSHA(s string) bool { return len(s) == 40 && strings.Trim(s, "0123456789abcdef") == "" }

// workOut answers now what reading p will ask of git: its diff and its
// commits.
func (rp *repo) workOut(p Pull) {
	if p.HeadSHA == "" {
		return
	}
	_, _ = rp.files(p)
	_, _ = rp.commits(p)
}

func (rp *repo) gitRaw(args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"--git-dir", rp.gitDir()}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	return cmd.Output()
}

func (s *Server) compare(w http.ResponseWriter, rp *repo, base, head string) {
	baseSHA, err := rp.git("rev-parse", "--verify", "--quiet", base+"^{commit}")
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	headSHA, err := rp.git("rev-parse", "--verify", "--quiet", head+"^{commit}")
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	status := "diverged"
	switch {
	case baseSHA == headSHA:
		status = "identical"
	case rp.isAncestor(baseSHA, headSHA):
		status = "ahead"
	case rp.isAncestor(headSHA, baseSHA):
		status = "behind"
	}
	msg, _ := rp.git("log", "-1", "--format=%B", baseSHA)
	ahead, _ := rp.git("rev-list", "--count", headSHA, "^"+baseSHA)
	behind, _ := rp.git("rev-list", "--count", baseSHA, "^"+headSHA)
	aheadBy, _ := strconv.Atoi(ahead)
	behindBy, _ := strconv.Atoi(behind)
	mergeBase, _ := rp.git("merge-base", baseSHA, headSHA)
	writeJSON(w, http.StatusOK, map[string]any{"status": status, "ahead_by": aheadBy, "behind_by": behindBy, "total_commits": aheadBy,
		"base_commit":       map[string]any{"sha": baseSHA, "commit": map[string]any{"message": msg}},
		"merge_base_commit": map[string]any{"sha": mergeBase}})
}

func (rp *repo) isAncestor(a, b string) bool {
	_, err := rp.git("merge-base", "--is-ancestor", a, b)
	return err == nil
}

func (s *Server) tagRef(w http.ResponseWriter, rp *repo, tag string) {
	out, err := rp.git("for-each-ref", "--format=%(objecttype) %(objectname)", "refs/tags/"+tag)
	typ, sha, ok := strings.Cut(out, " ")
	if err != nil || !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ref": "refs/tags/" + tag, "object": map[string]string{"type": typ, "sha": sha}})
}

func (s *Server) tagObject(w http.ResponseWriter, rp *repo, sha string) {
	out, err := rp.git("cat-file", "tag", sha)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	obj := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && (k == "object" || k == "type") {
			obj[map[string]string{"object": "sha", "type": "type"}[k]] = v
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sha": sha, "object": obj})
}

func (s *Server) getPull(w http.ResponseWriter, r *http.Request, fullName, number string) {
	number = strings.Trim(number, "/")
	n, err := strconv.Atoi(number)
	s.mu.Lock()
	rp := s.repos[fullName]
	var p *Pull
	if rp != nil && err == nil {
		p = rp.pulls[n]
	}
	var pc Pull
	var mergeable any = true
	if p != nil {
		pc = *p
		switch {
		case p.unknownReads > 0:
			p.unknownReads--
			mergeable, pc.MergeableState = nil, "unknown"
		case p.MergeableState == "unknown":
			mergeable = nil
		case p.MergeableState == "dirty":
			mergeable = false
		case p.MergeableState == "":
			pc.MergeableState = "clean"
		}
	}
	s.mu.Unlock()
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	files, _ := rp.files(pc)
	owner := strings.SplitN(fullName, "/", 2)[0]
	repoJSON := map[string]any{"full_name": fullName, "clone_url": s.cloneURL(r, rp, fullName), "owner": map[string]any{"login": owner}}
	writeJSON(w, http.StatusOK, map[string]any{
		"number":          pc.Number,
		"state":           pc.State,
		"merged":          pc.Merged,
		"title":           pc.Title,
		"mergeable":       mergeable,
		"mergeable_state": pc.MergeableState,
		"changed_files":   len(files),
		"user":            s.userBy(pc.User, ""),
		"html_url":        fmt.Sprintf("https://github.example/%s/pull/%d", fullName, pc.Number),
		"updated_at":      time.Now().UTC().Format(time.RFC3339),
		"head":            map[string]any{"sha": pc.HeadSHA, "ref": pc.HeadRef, "repo": headRepo(pc, repoJSON)},
		"base":            map[string]any{"ref": pc.BaseRef, "repo": repoJSON},
	})
}

// commitSep separates the fields of a commit in commits' answer.
const commitSep = "\x1f"

// commits is git's record of each of p's commits — those of its head that
// the base branch does not have, oldest first — as pullCommits reads it.
func (rp *repo) commits(p Pull) (string, error) {
	base := rp.commitOf(p.BaseRef)
	if base == "" {
		base = p.BaseRef
	}
	format := strings.Join([]string{"%H", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%B"}, commitSep)
	return rp.fixedGit([]string{p.HeadSHA, base}, "log", "--reverse", "-z", "--format="+format, p.HeadSHA, "^"+base)
}

// pullCommits lists a pull request's commits — those of its head that
// the base branch does not have, oldest first — with authors and
// committers, attributed to accounts by address as GitHub does. It pages
// like GitHub (per_page, page; at most 250 commits).
func (s *Server) pullCommits(w http.ResponseWriter, r *http.Request, rp *repo, fullName, number string) {
	n, err := strconv.Atoi(number)
	s.mu.Lock()
	var p *Pull
	if err == nil {
		p = rp.pulls[n]
	}
	var pc Pull
	if p != nil {
		pc = *p
	}
	s.mu.Unlock()
	if p == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	out, err := rp.commits(pc)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	var commits []map[string]any
	for _, rec := range strings.Split(out, "\x00") {
		f := strings.SplitN(rec, commitSep, 8)
		if len(f) < 8 {
			continue
		}
		commits = append(commits, map[string]any{
			"sha": f[0],
			"commit": map[string]any{
				"author":    map[string]any{"name": f[1], "email": f[2], "date": f[3]},
				"committer": map[string]any{"name": f[4], "email": f[5], "date": f[6]},
				"message":   strings.TrimSpace(f[7]),
			},
			"author":    s.userBy("", f[2]),
			"committer": s.userBy("", f[5]),
		})
	}
	commits = commits[:min(len(commits), 250)]
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if per <= 0 || per > 100 {
		per = 30
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 1)
	from, to := min((page-1)*per, len(commits)), min(page*per, len(commits))
	if to < len(commits) {
		w.Header().Set("Link", fmt.Sprintf(`<%s/api/v3/repos/%s/pulls/%d/commits?per_page=%d&page=%d>; rel="next"`,
			"http://"+r.Host, fullName, n, per, page+1))
	}
	writeJSON(w, http.StatusOK, append([]map[string]any{}, commits[from:to]...))
}

// headRepo is the head branch's repository: the repository itself, or the
// fork it names.
func headRepo(p Pull, base map[string]any) map[string]any {
	if p.HeadRepo == "" {
		return base
	}
	owner, _, _ := strings.Cut(p.HeadRepo, "/")
	return map[string]any{"full_name": p.HeadRepo, "fork": true, "owner": map[string]any{"login": owner},
		"clone_url": "https://github.example/" + p.HeadRepo + ".git"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// write answers the writes twokey makes: PR comments and commit statuses.
func (s *Server) write(w http.ResponseWriter, method, fullName, rest string, body []byte) {
	var in struct {
		Body        string `json:"body"`
		State       string `json:"state"`
		Context     string `json:"context"`
		Description string `json:"description"`
		TargetURL   string `json:"target_url"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Problems parsing JSON"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repos[fullName]
	parts := strings.Split(rest, "/")
	switch {
	case method == http.MethodPost && len(parts) == 3 && parts[0] == "issues" && parts[2] == "comments":
		n, _ := strconv.Atoi(parts[1])
		if rp.pulls[n] == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
			return
		}
		id := int64(1000 + len(rp.comments))
		rp.comments = append(rp.comments, Comment{ID: id, PR: n, Bodies: []string{in.Body}})
		writeJSON(w, http.StatusCreated, map[string]any{"id": id, "body": in.Body})
	case method == http.MethodPatch && len(parts) == 3 && parts[0] == "issues" && parts[1] == "comments":
		id, _ := strconv.ParseInt(parts[2], 10, 64)
		for i := range rp.comments {
			if rp.comments[i].ID == id {
				rp.comments[i].Bodies = append(rp.comments[i].Bodies, in.Body)
				writeJSON(w, http.StatusOK, map[string]any{"id": id, "body": in.Body})
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
	case method == http.MethodPost && len(parts) == 2 && parts[0] == "statuses":
		switch in.State {
		case "pending", "success", "failure", "error":
		default:
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Validation Failed"})
			return
		}
		if utf8.RuneCountInString(in.Description) > 140 {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "description is too long (maximum is 140 characters)"})
			return
		}
		rp.statuses = append(rp.statuses, Status{SHA: parts[1], Context: in.Context, State: in.State,
			Description: in.Description, TargetURL: in.TargetURL})
		writeJSON(w, http.StatusCreated, map[string]any{"state": in.State, "context": in.Context})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
	}
}
