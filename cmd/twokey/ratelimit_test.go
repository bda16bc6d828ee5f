package main

import (
	"net/http"
	"testing"
	"time"
)

// Slack answers the first two posts 429 with Retry-After: the bot waits
// them out and the plan's message is posted all the same; the waits are
// counted in the metrics.
func TestSlackRateLimited(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	addr := freeAddr(t)
	stop := s.startBot("--metrics-listen", addr)
	defer stop()

	s.slack.RateLimit("chat.postMessage", 2, time.Second)
	s.slash(alice, "plan staging pr-1")
	s.planMessage(1, "Plan ready for review")

	var posts []string
	for _, c := range s.slack.Calls() {
		if c.Method == "chat.postMessage" {
			posts = append(posts, c.Error)
		}
	}
	if len(posts) < 3 || posts[0] != "ratelimited" || posts[1] != "ratelimited" || posts[2] != "" {
		t.Errorf("chat.postMessage calls: %q", posts)
	}
	if code, text := get(t, addr, "/metrics"); code != http.StatusOK || sample(text, "twokey_api_rate_limited_total", `api="slack"`) != 2 {
		t.Errorf("rate-limited calls counted: %v", sample(text, "twokey_api_rate_limited_total", `api="slack"`))
	}
}
