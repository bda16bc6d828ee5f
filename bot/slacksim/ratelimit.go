package slacksim

import (
	"fmt"
	"math"
	"net/http"
	"time"
)

// rateLimit is how many more calls of a method answer 429, and the
// Retry-After they give.
type rateLimit struct {
	left  int
	after time.Duration
}

// RateLimit makes the next n calls of method answer HTTP 429 with
// Retry-After (whole seconds, rounded up), as Slack does when an app
// exceeds a method's rate limit. The calls are recorded with the error
// "ratelimited".
func (s *Server) RateLimit(method string, n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limits == nil {
		s.limits = map[string]*rateLimit{}
	}
	s.limits[method] = &rateLimit{left: n, after: retryAfter}
}

// limited answers 429 if method is being rate-limited.
func (s *Server) limited(w http.ResponseWriter, method string) bool {
	s.mu.Lock()
	l := s.limits[method]
	if l == nil || l.left <= 0 {
		s.mu.Unlock()
		return false
	}
	l.left--
	s.calls = append(s.calls, Call{Method: method, Error: "ratelimited"})
	s.changed.Broadcast()
	s.mu.Unlock()
	w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(l.after.Seconds()))))
	w.WriteHeader(http.StatusTooManyRequests)
	return true
}
