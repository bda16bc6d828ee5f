package ghsim

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Review is a pull request review. GitHub lists a pull request's reviews
// oldest first; a dismissed review keeps its place and becomes DISMISSED.
type Review struct {
	ID       int64  // assigned by AddReview
	User     string // the reviewer's login
	State    string // APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED
	CommitID string // the head commit the review was submitted on
}

// File is a pull request's changed file, as GET …/pulls/{n}/files lists it.
type File struct {
	Name     string // filename
	Previous string // previous_filename, for a rename
	Status   string // added, removed, modified, renamed; default modified
}

// AddReview submits a review on a pull request and returns its ID. An
// empty CommitID is the pull request's current head.
func (s *Server) AddReview(fullName string, pr int, r Review) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repos[fullName]
	if r.CommitID == "" && rp.pulls[pr] != nil {
		r.CommitID = rp.pulls[pr].HeadSHA
	}
	n := 0
	for _, rs := range rp.reviews {
		n += len(rs)
	}
	r.ID = int64(5000 + n)
	rp.reviews[pr] = append(rp.reviews[pr], r)
	return r.ID
}

// DismissReview dismisses a review, as a maintainer can on GitHub.
func (s *Server) DismissReview(fullName string, pr int, id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.repos[fullName].reviews[pr]
	for i := range rs {
		if rs[i].ID == id {
			rs[i].State = "DISMISSED"
			return true
		}
	}
	return false
}

// PushHead moves a pull request's head to sha, as a push to its branch
// does; with DismissStaleReviews, its approvals are dismissed.
func (s *Server) PushHead(fullName string, pr int, sha string) {
	s.mu.Lock()
	rp := s.repos[fullName]
	p := rp.pulls[pr]
	p.HeadSHA = sha
	if p.DismissStaleReviews {
		for i := range rp.reviews[pr] {
			if rp.reviews[pr][i].State == "APPROVED" {
				rp.reviews[pr][i].State = "DISMISSED"
			}
		}
	}
	pushed := *p
	s.mu.Unlock()
	rp.workOut(pushed)
}

// SetMergeable sets a pull request's mergeable_state (see
// Pull.MergeableState); for the next unknownReads reads GitHub is still
// computing it and answers mergeable null.
func (s *Server) SetMergeable(fullName string, pr int, state string, unknownReads int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.repos[fullName].pulls[pr]
	p.MergeableState, p.unknownReads = state, unknownReads
}

// SetFiles sets the changed files a pull request lists, instead of its diff.
func (s *Server) SetFiles(fullName string, pr int, files []File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[fullName].pulls[pr].Files = append([]File(nil), files...)
}

// AddTeam creates or replaces a team of org with members (logins); GET
// /orgs/{org}/teams/{slug}/members lists them.
func (s *Server) AddTeam(org, slug string, members ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.teams[strings.ToLower(org+"/"+slug)] = append([]string(nil), members...)
}

// serveTeams answers GET /orgs/{org}/teams/{slug}/members, paged. It
// reports whether it answered.
func (s *Server) serveTeams(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v3"), "/"), "/")
	if r.Method != http.MethodGet || len(parts) != 5 || parts[0] != "orgs" || parts[2] != "teams" || parts[4] != "members" {
		return false
	}
	s.mu.Lock()
	logins, ok := s.teams[strings.ToLower(parts[1]+"/"+parts[3])]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return true
	}
	var out []map[string]any
	for _, l := range logins {
		out = append(out, s.userBy(l, ""))
	}
	page(w, r, out)
	return true
}

// page answers one page of items as GitHub does (per_page up to 100,
// default 30; page from 1; a Link header to the next page).
func page(w http.ResponseWriter, r *http.Request, items []map[string]any) {
	q := r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 || per > 100 {
		per = 30
	}
	n, _ := strconv.Atoi(q.Get("page"))
	n = max(n, 1)
	from, to := min((n-1)*per, len(items)), min(n*per, len(items))
	if to < len(items) {
		w.Header().Set("Link", fmt.Sprintf(`<%s%s?per_page=%d&page=%d>; rel="next"`, "http://"+r.Host, r.URL.Path, per, n+1))
	}
	writeJSON(w, http.StatusOK, append([]map[string]any{}, items[from:to]...))
}

func (s *Server) pull(fullName, number string) (Pull, []Review, bool) {
	n, err := strconv.Atoi(strings.Trim(number, "/"))
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.repos[fullName]
	if err != nil || rp == nil || rp.pulls[n] == nil {
		return Pull{}, nil, false
	}
	return *rp.pulls[n], append([]Review(nil), rp.reviews[n]...), true
}

// pullReviews lists a pull request's reviews, oldest first, paged.
func (s *Server) pullReviews(w http.ResponseWriter, r *http.Request, fullName, number string) {
	_, reviews, ok := s.pull(fullName, number)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	var out []map[string]any
	for i, rv := range reviews {
		out = append(out, map[string]any{"id": rv.ID, "user": s.userBy(rv.User, ""), "state": rv.State,
			"commit_id": rv.CommitID, "body": "",
			"submitted_at": time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC).Format(time.RFC3339)})
	}
	page(w, r, out)
}

// files is a pull request's changed files: those set, or the diff from
// where the head left the base branch to the head (GitHub's three dots).
// GitHub counts them all in changed_files but lists at most 3000.
func (rp *repo) files(p Pull) ([]File, error) {
	if p.Files != nil {
		return p.Files, nil
	}
	base := rp.commitOf(p.BaseRef)
	if base == "" {
		base = p.BaseRef
	}
	base, err := rp.fixedGit([]string{base, p.HeadSHA}, "merge-base", base, p.HeadSHA)
	if err != nil {
		return nil, err
	}
	out, err := rp.fixedGit([]string{base, p.HeadSHA}, "diff", "--name-status", "-z", "--no-renames", base, p.HeadSHA)
	if err != nil {
		return nil, err
	}
	var files []File
	f := strings.Split(strings.Trim(out, "\x00"), "\x00")
	for i := 0; i+1 < len(f); i += 2 {
		status := map[string]string{"A": "added", "D": "removed", "M": "modified", "T": "changed"}[f[i]]
		files = append(files, File{Name: f[i+1], Status: status})
	}
	return files, nil
}

// pullFiles lists a pull request's changed files, paged.
func (s *Server) pullFiles(w http.ResponseWriter, r *http.Request, rp *repo, fullName, number string) {
	p, _, ok := s.pull(fullName, number)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	files, err := rp.files(p)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	var out []map[string]any
	for _, f := range files[:min(len(files), 3000)] {
		m := map[string]any{"filename": f.Name, "status": f.Status}
		if f.Status == "" {
			m["status"] = "modified"
		}
		if f.Previous != "" {
			m["previous_filename"] = f.Previous
		}
		out = append(out, m)
	}
	page(w, r, out)
}

// contents answers GET …/contents/{path}?ref= for a file: its bytes,
// base64, at ref (default the default branch).
func (s *Server) contents(w http.ResponseWriter, rp *repo, path, ref string) {
	if ref == "" {
		ref = "main"
	}
	sha, err := rp.git("rev-parse", "--verify", "--quiet", ref+":"+path)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	if typ, _ := rp.git("cat-file", "-t", sha); typ != "blob" {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	body, err := rp.gitRaw("cat-file", "blob", sha)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return
	}
	name := path[strings.LastIndex(path, "/")+1:]
	writeJSON(w, http.StatusOK, map[string]any{"type": "file", "encoding": "base64", "size": len(body),
		"name": name, "path": path, "sha": sha, "content": base64.StdEncoding.EncodeToString(body)})
}

// SetPermission sets login's permission on a repository: admin, write,
// read or none. Accounts added with AddUser have write unless set
// otherwise; any other login has read, as anyone has on a public
// repository.
func (s *Server) SetPermission(fullName, login, perm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[fullName].perms[strings.ToLower(login)] = perm
}

// permission answers GET …/collaborators/{user}/permission.
func (s *Server) permission(w http.ResponseWriter, rp *repo, login string) {
	s.mu.Lock()
	perm, set := rp.perms[strings.ToLower(login)]
	known := false
	for _, u := range s.users {
		known = known || strings.EqualFold(u.Login, login)
	}
	s.mu.Unlock()
	switch {
	case set:
	case known:
		perm = "write"
	default:
		perm = "read"
	}
	writeJSON(w, http.StatusOK, map[string]any{"permission": perm, "role_name": perm, "user": s.userBy(login, "")})
}
