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
	"strconv"
	"strings"
	"sync"
	"time"
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
	User    string
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

	mu       sync.Mutex
	repos    map[string]*repo
	requests []Request
	failing  int // answer this many more requests with 500
}

type repo struct {
	cloneURL string
	pulls    map[int]*Pull
}

// New returns an empty server.
func New() *Server { return &Server{repos: map[string]*repo{}} }

// AddRepo registers owner/name with the URL git clones it from.
func (s *Server) AddRepo(fullName, cloneURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repos[fullName] = &repo{cloneURL: cloneURL, pulls: map[int]*Pull{}}
}

// SetPull creates or replaces a pull request.
func (s *Server) SetPull(fullName string, p Pull) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.State == "" {
		p.State = "open"
	}
	if p.BaseRef == "" {
		p.BaseRef = "main"
	}
	if p.User == "" {
		p.User = "octocat"
	}
	s.repos[fullName].pulls[p.Number] = &p
}

// Fail makes the next n requests answer 500.
func (s *Server) Fail(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = n
}

// Requests returns every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Body: string(body)})
	failing := s.failing > 0
	if failing {
		s.failing--
	}
	s.mu.Unlock()

	if failing {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"message": "Server Error"})
		return
	}
	if s.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.Token {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v3"), "/"), "/")
	// repos/{owner}/{repo}/pulls/{n}
	if r.Method == http.MethodGet && len(parts) == 5 && parts[0] == "repos" && parts[3] == "pulls" {
		s.getPull(w, parts[1]+"/"+parts[2], parts[4])
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
}

func (s *Server) getPull(w http.ResponseWriter, fullName, number string) {
	n, err := strconv.Atoi(number)
	s.mu.Lock()
	rp := s.repos[fullName]
	var p *Pull
	if rp != nil && err == nil {
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
	owner := strings.SplitN(fullName, "/", 2)[0]
	repoJSON := map[string]any{"full_name": fullName, "clone_url": rp.cloneURL, "owner": map[string]any{"login": owner}}
	writeJSON(w, http.StatusOK, map[string]any{
		"number":     pc.Number,
		"state":      pc.State,
		"merged":     pc.Merged,
		"title":      pc.Title,
		"user":       map[string]any{"login": pc.User},
		"html_url":   fmt.Sprintf("https://github.example/%s/pull/%d", fullName, pc.Number),
		"updated_at": time.Now().UTC().Format(time.RFC3339),
		"head":       map[string]any{"sha": pc.HeadSHA, "ref": pc.HeadRef, "repo": repoJSON},
		"base":       map[string]any{"ref": pc.BaseRef, "repo": repoJSON},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
