package main

import (
	"net/http"
	"strings"
	"testing"
)

// /readyz is not ready while the Slack socket is down — Slack dropped it
// and refuses new ones — saying so, while /healthz still answers; once
// Slack takes sockets again, slack-go reconnects and /readyz is ready.
func TestReadyzFollowsTheSlackSocket(t *testing.T) {
	s := newStack(t)
	addr := freeAddr(t)
	s.startBot("--metrics-listen", addr)
	if body := eventually(t, addr, "/readyz", http.StatusOK); !strings.Contains(body, "slack: ok") {
		t.Fatalf("/readyz lacks slack: ok:\n%s", body)
	}

	s.slack.RefuseSockets(true)
	s.slack.Drop()
	body := eventually(t, addr, "/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "slack: socket mode not connected") || !strings.Contains(body, "redis: ok") {
		t.Errorf("/readyz while the Slack socket is down:\n%s", body)
	}
	if code, _ := get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while the Slack socket is down; the process is alive", code)
	}

	s.slack.RefuseSockets(false)
	if body := eventually(t, addr, "/readyz", http.StatusOK); !strings.Contains(body, "slack: ok") {
		t.Errorf("/readyz after the reconnect:\n%s", body)
	}
	if s.slack.Connections() != 1 {
		t.Errorf("%d sockets after the reconnect, want 1", s.slack.Connections())
	}
	// And it works: a command gets its answer.
	s.slash(alice, "help")
	s.ephemeral(alice, "/tf plan")
}
