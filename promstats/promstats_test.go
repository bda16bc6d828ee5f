package promstats

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func has(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, l+"\n") {
			t.Errorf("metrics lack %q", l)
		}
	}
}

func TestStats(t *testing.T) {
	m := New("serve")
	m.Planned("infra", "prod", "pending", 3*time.Second)
	m.Planned("infra", "prod", "no_changes", 0) // completed by a sweeper: not timed
	m.Approved("infra", "prod")
	m.Refused("locked")
	m.Applied("infra", "prod", "applied", 40*time.Second)
	m.LockBusy("infra", "prod")
	m.Drift("infra", "prod", true)
	m.Drift("infra", "staging", false)
	m.GrantsActive(2)
	m.Minted("run", 20*time.Millisecond, nil)
	m.Minted("breakglass", 30*time.Millisecond, errors.New("vault down"))
	m.Queues(func(context.Context) (map[string]Queue, error) {
		return map[string]Queue{"prod": {Depth: 3, Oldest: time.Now().Add(-time.Hour)}, "dev": {}}, nil
	})
	text := scrape(t, m)
	has(t, text,
		`twokey_up{role="serve"} 1`,
		`twokey_plans_total{env="prod",project="infra",result="pending"} 1`,
		`twokey_plans_total{env="prod",project="infra",result="no_changes"} 1`,
		`twokey_plan_duration_seconds_count{env="prod",project="infra"} 1`,
		`twokey_approvals_total{env="prod",project="infra"} 1`,
		`twokey_refusals_total{reason="locked"} 1`,
		`twokey_applies_total{env="prod",project="infra",result="applied"} 1`,
		`twokey_apply_duration_seconds_sum{env="prod",project="infra"} 40`,
		`twokey_lock_busy_total{env="prod",project="infra"} 1`,
		`twokey_drift_checks_total{env="prod",project="infra",result="drift"} 1`,
		`twokey_drift_detected{env="prod",project="infra"} 1`,
		`twokey_drift_detected{env="staging",project="infra"} 0`,
		`twokey_breakglass_grants_active 2`,
		`twokey_vault_mint_duration_seconds_count{kind="run"} 1`,
		`twokey_vault_mint_failures_total{kind="breakglass"} 1`,
		`twokey_vault_mint_failures_total{kind="run"} 0`,
		`twokey_queue_depth{pool="prod"} 3`,
		`twokey_queue_depth{pool="dev"} 0`,
		`twokey_queue_oldest_job_age_seconds{pool="dev"} 0`,
	)
	if !strings.Contains(text, `twokey_queue_oldest_job_age_seconds{pool="prod"} 3600`) {
		t.Error("oldest prod job is not about an hour old")
	}
	for _, name := range Names {
		if !strings.Contains(text, "# TYPE "+name+" ") {
			t.Errorf("%s is in Names but not exported", name)
		}
	}
}

// Failed Slack and GitHub calls are counted by kind; what the caller reads
// is the answer unchanged.
func TestTransport(t *testing.T) {
	answers := map[string]func(w http.ResponseWriter){
		"/ok":       func(w http.ResponseWriter) { w.Write([]byte(`{"ok":true}`)) },
		"/notok":    func(w http.ResponseWriter) { w.Write([]byte(`{"ok":false,"error":"channel_not_found"}`)) },
		"/limited":  func(w http.ResponseWriter) { w.Header().Set("Retry-After", "1"); w.WriteHeader(429) },
		"/broken":   func(w http.ResponseWriter) { w.WriteHeader(502) },
		"/denied":   func(w http.ResponseWriter) { w.WriteHeader(403) },
		"/notfound": func(w http.ResponseWriter) { w.WriteHeader(404) },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { answers[r.URL.Path](w) }))
	defer srv.Close()
	m := New("serve")
	slack := &http.Client{Transport: m.Transport("slack", nil)}
	github := &http.Client{Transport: m.Transport("github", nil)}
	call := func(c *http.Client, path string) string {
		t.Helper()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := call(slack, "/notok"); got != `{"ok":false,"error":"channel_not_found"}` {
		t.Errorf("body passed on as %q", got)
	}
	call(slack, "/ok")
	call(slack, "/limited")
	call(slack, "/broken")
	call(github, "/denied")
	call(github, "/notfound")
	call(github, "/notok") // GitHub's bodies are not Slack's
	if _, err := (&http.Client{Transport: m.Transport("github", nil)}).Get("http://127.0.0.1:1/"); err == nil {
		t.Fatal("port 1 answered")
	}
	has(t, scrape(t, m),
		`twokey_api_errors_total{api="slack",kind="not_ok"} 1`,
		`twokey_api_rate_limited_total{api="slack"} 1`,
		`twokey_api_errors_total{api="slack",kind="http_5xx"} 1`,
		`twokey_api_errors_total{api="github",kind="http_4xx"} 1`,
		`twokey_api_errors_total{api="github",kind="not_ok"} 0`,
		`twokey_api_errors_total{api="github",kind="transport"} 1`,
	)
}

// A queue that cannot be read leaves the queue metrics out of the scrape,
// and nothing else.
func TestQueuesUnreadable(t *testing.T) {
	m := New("runner")
	m.Queues(func(context.Context) (map[string]Queue, error) { return nil, errors.New("redis down") })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "twokey_queue_depth") {
		t.Errorf("scrape with an unreadable queue: %d\n%s", rec.Code, rec.Body.String())
	}
	has(t, rec.Body.String(), `twokey_up{role="runner"} 1`)
}
