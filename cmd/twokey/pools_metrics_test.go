package main

import (
	"net/http"
	"strings"
	"testing"
)

// A runner's --metrics-listen: /readyz checks Redis and its pool's Vault
// login, and /metrics has its own pool's queue, read with the pool's own
// Redis ACL user; serve's has every pool's queue and no Vault check (it
// holds no Vault login when runners do the work).
func TestRunnerAndServeMetrics(t *testing.T) {
	w := newPoolWorld(t)
	runnerAddr, serveAddr := freeAddr(t), freeAddr(t)
	_ = w.startServe("--metrics-listen", serveAddr)
	_ = w.startRunner("nonprod", "np-1", "--metrics-listen", runnerAddr)

	ready := eventually(t, runnerAddr, "/readyz", http.StatusOK)
	if !strings.Contains(ready, "redis: ok") || !strings.Contains(ready, "vault: ok") {
		t.Errorf("runner /readyz:\n%s", ready)
	}
	_, text := get(t, runnerAddr, "/metrics")
	if sample(text, "twokey_up", `role="runner"`) != 1 || sample(text, "twokey_queue_depth", `pool="nonprod"`) != 0 ||
		sample(text, "twokey_queue_depth", `pool="prod"`) != -1 {
		t.Errorf("runner metrics:\n%s", grepLines(text, "twokey_up", "twokey_queue"))
	}

	ready = eventually(t, serveAddr, "/readyz", http.StatusOK)
	if !strings.Contains(ready, "slack: ok") || strings.Contains(ready, "vault") {
		t.Errorf("serve /readyz:\n%s", ready)
	}
	_, text = get(t, serveAddr, "/metrics")
	if sample(text, "twokey_queue_depth", `pool="nonprod"`) != 0 || sample(text, "twokey_queue_depth", `pool="prod"`) != 0 {
		t.Errorf("serve queue metrics:\n%s", grepLines(text, "twokey_queue"))
	}
}

func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
