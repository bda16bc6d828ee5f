package ghsim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// App is a GitHub App installed on every repository of the server. It
// proves who it is with a JWT signed by its private key (RS256, iss = its
// ID), which buys an installation token; only installation tokens may
// write check runs, as on GitHub.
type App struct {
	ID             int64
	PublicKey      *rsa.PublicKey
	InstallationID int64
}

// AddApp installs an App.
func (s *Server) AddApp(a App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps = append(s.apps, a)
}

// installationToken is one token handed out to an installation.
type installationToken struct {
	app     int64
	expires time.Time
}

// CheckRun is one check run, as last written.
type CheckRun struct {
	ID                     int64
	AppID                  int64
	Name, HeadSHA          string
	Status, Conclusion     string
	Title, Summary         string
	DetailsURL, ExternalID string
	Updates                int // how many times it was updated after its creation
}

// CheckRuns returns the check runs of a repository, in the order they were
// created.
func (s *Server) CheckRuns(fullName string) []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CheckRun
	for _, c := range s.repos[fullName].checkRuns {
		out = append(out, *c)
	}
	return out
}

// BasicAuth is an Authorization header for HTTP basic auth, as git sends a
// token (user "x-access-token").
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// bearer is the token an Authorization header carries: "Bearer T",
// "token T", or basic auth with T as the password.
func bearer(auth string) string {
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if t, ok := strings.CutPrefix(auth, p); ok {
			return t
		}
	}
	if b, ok := strings.CutPrefix(auth, "Basic "); ok {
		raw, err := base64.StdEncoding.DecodeString(b)
		if err == nil {
			_, pw, _ := strings.Cut(string(raw), ":")
			return pw
		}
	}
	return ""
}

// IsInstallationToken reports whether an Authorization header carries an
// installation token this server handed out.
func (s *Server) IsInstallationToken(auth string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.installationTokens[bearer(auth)]
	return ok
}

// installation returns the App whose live installation token auth carries.
func (s *Server) installation(auth string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.installationTokens[bearer(auth)]
	if !ok || !time.Now().Before(t.expires) {
		return 0, false
	}
	return t.app, true
}

// authorized says whether a request may use the API: with no token and no
// App set, anyone may; otherwise the token, or a live installation token.
func (s *Server) authorized(auth string) bool {
	s.mu.Lock()
	open, token := s.Token == "" && len(s.apps) == 0, s.Token
	s.mu.Unlock()
	if open {
		return true
	}
	if token != "" && bearer(auth) == token {
		return true
	}
	_, ok := s.installation(auth)
	return ok
}

// serveApp answers POST /app/installations/{id}/access_tokens, which only
// a valid App JWT may call.
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v3"), "/"), "/")
	if len(parts) != 4 || parts[0] != "app" || parts[1] != "installations" || parts[3] != "access_tokens" {
		return false
	}
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return true
	}
	app, err := s.verifyJWT(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": err.Error()})
		return true
	}
	id, _ := strconv.ParseInt(parts[2], 10, 64)
	if id == 0 || id != app.InstallationID {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return true
	}
	ttl := s.InstallationTokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	token, expires := "ghs_"+randomHex(18), time.Now().Add(ttl).UTC().Truncate(time.Second)
	s.mu.Lock()
	s.installationTokens[token] = installationToken{app: app.ID, expires: expires}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"token": token, "expires_at": expires.Format(time.RFC3339),
		"permissions": map[string]string{"checks": "write", "contents": "read", "pull_requests": "write", "statuses": "write"}})
	return true
}

// verifyJWT checks an App's JWT as GitHub does: RS256 signed by one of the
// Apps' keys, iss its ID, issued not in the future, expiring within ten
// minutes and not yet expired.
func (s *Server) verifyJWT(token string) (App, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return App{}, errors.New("A JSON web token could not be decoded")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Iat *float64        `json:"iat"`
		Exp *float64        `json:"exp"`
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil || json.Unmarshal(hb, &header) != nil || json.Unmarshal(cb, &claims) != nil {
		return App{}, errors.New("A JSON web token could not be decoded")
	}
	if header.Alg != "RS256" {
		return App{}, fmt.Errorf("'alg' %q is not RS256", header.Alg)
	}
	iss := strings.Trim(string(claims.Iss), `"`)
	s.mu.Lock()
	i := slices.IndexFunc(s.apps, func(a App) bool { return strconv.FormatInt(a.ID, 10) == iss })
	var app App
	if i >= 0 {
		app = s.apps[i]
	}
	s.mu.Unlock()
	if i < 0 {
		return App{}, errors.New("'Issuer' claim ('iss') must be an Integer")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(app.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		return App{}, errors.New("A JSON web token could not be decoded")
	}
	now := float64(time.Now().Unix())
	switch {
	case claims.Exp == nil || claims.Iat == nil:
		return App{}, errors.New("'Expiration time' claim ('exp') and 'Issued at' claim ('iat') are required")
	case *claims.Exp <= now:
		return App{}, errors.New("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")
	case *claims.Exp > now+10*60+30:
		return App{}, errors.New("'Expiration time' claim ('exp') is too far in the future")
	case *claims.Iat > now+60:
		return App{}, errors.New("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued")
	}
	return app, nil
}

// checkRuns answers POST …/check-runs, PATCH …/check-runs/{id} and GET
// …/commits/{ref}/check-runs. Writes need an installation token.
func (s *Server) checkRuns(w http.ResponseWriter, r *http.Request, rp *repo, rest string, body []byte) bool {
	parts := strings.Split(rest, "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "commits" && parts[2] == "check-runs":
		s.listCheckRuns(w, r, rp, parts[1])
		return true
	case parts[0] != "check-runs":
		return false
	case r.Method == http.MethodGet:
		return false
	}
	app, ok := s.installation(r.Header.Get("Authorization"))
	if !ok {
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "You must authenticate via a GitHub App."})
		return true
	}
	var in struct {
		Name       *string `json:"name"`
		HeadSHA    string  `json:"head_sha"`
		Status     *string `json:"status"`
		Conclusion *string `json:"conclusion"`
		DetailsURL *string `json:"details_url"`
		ExternalID *string `json:"external_id"`
		Output     *struct {
			Title   *string `json:"title"`
			Summary *string `json:"summary"`
		} `json:"output"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Problems parsing JSON"})
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var c CheckRun
	var existing *CheckRun
	switch {
	case r.Method == http.MethodPost && len(parts) == 1:
		if in.Name == nil || *in.Name == "" || len(in.HeadSHA) != 40 {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Validation Failed: name and head_sha are required"})
			return true
		}
		c = CheckRun{AppID: app, Name: *in.Name, HeadSHA: in.HeadSHA, Status: "queued"}
	case r.Method == http.MethodPatch && len(parts) == 2:
		id, _ := strconv.ParseInt(parts[1], 10, 64)
		for _, e := range rp.checkRuns {
			if e.ID == id {
				existing = e
			}
		}
		if existing == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
			return true
		}
		if existing.AppID != app {
			writeJSON(w, http.StatusForbidden, map[string]string{"message": "Resource not accessible by integration"})
			return true
		}
		c = *existing
		if in.Name != nil && *in.Name != "" {
			c.Name = *in.Name
		}
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return true
	}
	if in.Status != nil {
		c.Status = *in.Status
	}
	if in.Conclusion != nil {
		c.Conclusion, c.Status = *in.Conclusion, "completed" // a conclusion completes the run
	}
	if in.DetailsURL != nil {
		c.DetailsURL = *in.DetailsURL
	}
	if in.ExternalID != nil {
		c.ExternalID = *in.ExternalID
	}
	if in.Output != nil {
		if in.Output.Title == nil || in.Output.Summary == nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Validation Failed: output needs title and summary"})
			return true
		}
		c.Title, c.Summary = *in.Output.Title, *in.Output.Summary
	}
	if problem := c.invalid(); problem != "" {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Validation Failed: " + problem})
		return true
	}
	status := http.StatusOK
	if existing != nil {
		c.Updates++
		*existing = c
	} else {
		s.nextCheckRun++
		c.ID = 7000 + s.nextCheckRun
		rp.checkRuns = append(rp.checkRuns, &c)
		status = http.StatusCreated
	}
	writeJSON(w, status, checkRunJSON(c))
	return true
}

// invalid says what GitHub would refuse in a check run, or "".
func (c CheckRun) invalid() string {
	switch {
	case !slices.Contains([]string{"queued", "in_progress", "completed"}, c.Status):
		return "status " + c.Status
	case c.Status == "completed" && c.Conclusion == "":
		return "conclusion is required when status is completed"
	case c.Status != "completed" && c.Conclusion != "":
		return "a conclusion completes the run"
	case c.Conclusion != "" && !slices.Contains([]string{"action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"}, c.Conclusion):
		return "conclusion " + c.Conclusion
	case c.Conclusion == "action_required" && c.DetailsURL == "":
		return "details_url is required when conclusion is action_required"
	case utf8.RuneCountInString(c.Summary) > 65535:
		return "output.summary is too long (maximum is 65535 characters)"
	}
	return ""
}

func checkRunJSON(c CheckRun) map[string]any {
	out := map[string]any{"id": c.ID, "name": c.Name, "head_sha": c.HeadSHA, "status": c.Status,
		"app": map[string]any{"id": c.AppID}, "output": map[string]any{"title": c.Title, "summary": c.Summary}}
	if c.Conclusion != "" {
		out["conclusion"] = c.Conclusion
	}
	if c.DetailsURL != "" {
		out["details_url"] = c.DetailsURL
	}
	if c.ExternalID != "" {
		out["external_id"] = c.ExternalID
	}
	return out
}

// listCheckRuns lists the check runs on a commit, newest first, filtered
// by check_name and app_id.
func (s *Server) listCheckRuns(w http.ResponseWriter, r *http.Request, rp *repo, ref string) {
	sha, err := rp.git("rev-parse", "--verify", "--quiet", ref+"^{commit}")
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "No commit found for SHA: " + ref})
		return
	}
	q := r.URL.Query()
	app, _ := strconv.ParseInt(q.Get("app_id"), 10, 64)
	s.mu.Lock()
	var runs []map[string]any
	for _, c := range slices.Backward(rp.checkRuns) {
		if c.HeadSHA == sha && (q.Get("check_name") == "" || q.Get("check_name") == c.Name) && (app == 0 || app == c.AppID) {
			runs = append(runs, checkRunJSON(*c))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(runs), "check_runs": append([]map[string]any{}, runs...)})
}

// serveGit serves a repository's git over smart HTTP at
// /<owner>/<name>.git with git http-backend, to whoever holds the token or
// an installation token (as basic auth, user x-access-token).
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request) bool {
	owner, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	name, _, ok := strings.Cut(rest, ".git/")
	if !ok || strings.Contains(name, "/") {
		return false
	}
	s.mu.Lock()
	rp := s.repos[owner+"/"+name]
	on := s.GitOverHTTP
	s.mu.Unlock()
	if !on || rp == nil {
		return false
	}
	if !s.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "Invalid username or token.", http.StatusUnauthorized)
		return true
	}
	git, err := exec.LookPath("git")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return true
	}
	h := &cgi.Handler{Path: git, Args: []string{"http-backend"}, Root: "/" + owner + "/" + name + ".git",
		Env: []string{"GIT_PROJECT_ROOT=" + rp.gitDir(), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
			"PATH=" + os.Getenv("PATH")}}
	h.ServeHTTP(w, r)
	return true
}

// cloneURL is where git fetches a repository from: the local repository,
// or this server over HTTP with GitOverHTTP.
func (s *Server) cloneURL(r *http.Request, rp *repo, fullName string) string {
	s.mu.Lock()
	on := s.GitOverHTTP
	s.mu.Unlock()
	if on {
		return "http://" + r.Host + "/" + fullName + ".git"
	}
	return rp.cloneURL
}
