package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freeAddr is a loopback address nothing listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get fetches http://addr/path and returns the status and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// eventually polls get until the status is want.
func eventually(t *testing.T, addr, path string, want int) string {
	t.Helper()
	var code int
	var body string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = get(t, addr, path); code == want {
			return body
		}
	}
	t.Fatalf("%s answered %d, want %d:\n%s", path, code, want, body)
	return ""
}

// sample is the value of one sample in Prometheus text, or -1 if absent.
func sample(text, name string, labels ...string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// A change end to end, scraped: the counters and histograms of plans,
// approvals, refusals, applies and Vault mints move, /healthz answers, and
// /readyz is ready until Redis stops and again once it is back.
func TestMetricsAndHealth(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	addr := freeAddr(t)
	stop := s.startBot("--metrics-listen", addr)
	defer stop()

	if code, body := get(t, addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	ready := eventually(t, addr, "/readyz", http.StatusOK)
	for _, want := range []string{"redis: ok", "slack: ok", "vault: ok"} {
		if !strings.Contains(ready, want) {
			t.Errorf("/readyz lacks %q:\n%s", want, ready)
		}
	}
	_, before := get(t, addr, "/metrics")
	if v := sample(before, "twokey_up", `role="serve"`); v != 1 {
		t.Errorf("twokey_up = %v", v)
	}

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(alice, msg, approve) // the requester: refused
	s.ephemeral(alice, "cannot approve")
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")

	_, text := get(t, addr, "/metrics")
	env := []string{`project="infra"`, `env="staging"`}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"twokey_plans_total", append(env, `result="pending"`), 1},
		{"twokey_plan_duration_seconds_count", env, 1},
		{"twokey_approvals_total", env, 2},
		{"twokey_refusals_total", []string{`reason="self_approval"`}, 1},
		{"twokey_applies_total", append(env, `result="applied"`), 1},
		{"twokey_apply_duration_seconds_count", env, 1},
		{"twokey_vault_mint_failures_total", []string{`kind="run"`}, 0},
		{"twokey_api_errors_total", []string{`api="slack"`, `kind="http_5xx"`}, 0},
	} {
		if got := sample(text, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The apply's token, at least.
	if got := sample(text, "twokey_vault_mint_duration_seconds_count", `kind="run"`); got < 1 {
		t.Errorf("vault mints counted: %v", got)
	}
	if got := sample(text, "twokey_breakglass_grants_active"); got != 0 {
		t.Errorf("grants active = %v", got)
	}
	if !regexp.MustCompile(`(?m)^go_goroutines \d+`).MatchString(text) {
		t.Error("no Go runtime metrics")
	}

	// Redis stops: not ready, saying why; back: ready.
	if err := s.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	body := eventually(t, addr, "/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "redis: ") || strings.Contains(body, "redis: ok") {
		t.Errorf("/readyz while Redis is down:\n%s", body)
	}
	if code, _ := get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while Redis is down; the process is alive", code)
	}
	if err := s.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, addr, "/readyz", http.StatusOK)
}
