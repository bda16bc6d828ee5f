// Package promstats is twokey's Prometheus adapter: it counts what the
// change service reports (change.Stats), the Vault mints and the Slack and
// GitHub API calls of a process, and the runner queues, and serves them
// in Prometheus's text format. Nothing else in twokey imports
// prometheus/client_golang.
package promstats

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds one process's metrics, in a registry of its own (no
// package-level state: tests run several processes in one binary).
type Metrics struct {
	reg *prometheus.Registry

	plans        *prometheus.CounterVec
	planSeconds  *prometheus.HistogramVec
	approvals    *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	applies      *prometheus.CounterVec
	applySeconds *prometheus.HistogramVec
	lockBusy     *prometheus.CounterVec
	drifts       *prometheus.CounterVec
	drifted      *prometheus.GaugeVec
	grants       prometheus.Gauge
	mintSeconds  *prometheus.HistogramVec
	mintFailures *prometheus.CounterVec
	apiErrors    *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
}

// Names are the metrics Metrics exports (besides Go's and the process's).
var Names = []string{
	"twokey_plans_total", "twokey_plan_duration_seconds", "twokey_approvals_total", "twokey_refusals_total",
	"twokey_applies_total", "twokey_apply_duration_seconds", "twokey_lock_busy_total",
	"twokey_drift_checks_total", "twokey_drift_detected", "twokey_breakglass_grants_active",
	"twokey_vault_mint_duration_seconds", "twokey_vault_mint_failures_total",
	"twokey_api_errors_total", "twokey_api_rate_limited_total",
	"twokey_queue_depth", "twokey_queue_oldest_job_age_seconds", "twokey_up",
}

// terraform runs take seconds to many minutes.
var runBuckets = []float64{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// New returns the metrics of one process; role (serve, runner) is a
// constant label of twokey_up.
func New(role string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	env := []string{"project", "env"}
	m := &Metrics{reg: reg}
	m.plans = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_plans_total",
		Help: "Plans that ended, by result: pending (waiting for approval), no_changes, plan_failed."}, append(env, "result"))).(*prometheus.CounterVec)
	m.planSeconds = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "twokey_plan_duration_seconds",
		Help: "How long plans ran (checkout, init, plan, show).", Buckets: runBuckets}, env)).(*prometheus.HistogramVec)
	m.approvals = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_approvals_total",
		Help: "Approvals counted."}, env)).(*prometheus.CounterVec)
	m.refusals = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_refusals_total",
		Help: "Commands and clicks refused, by reason (self_approval, not_authorized, locked, channel, …; error for unexpected errors)."},
		[]string{"reason"})).(*prometheus.CounterVec)
	m.applies = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_applies_total",
		Help: "Applies that ended, by result: applied, failed, interrupted, credentials_unavailable, audit_unavailable, stale_plan, lock_lost."},
		append(env, "result"))).(*prometheus.CounterVec)
	m.applySeconds = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "twokey_apply_duration_seconds",
		Help: "How long terraform apply ran.", Buckets: runBuckets}, env)).(*prometheus.HistogramVec)
	m.lockBusy = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_lock_busy_total",
		Help: "Plans that found their environment held by another pending change."}, env)).(*prometheus.CounterVec)
	m.drifts = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_drift_checks_total",
		Help: "Drift checks that ran to the end, by result: clean or drift."}, append(env, "result"))).(*prometheus.CounterVec)
	m.drifted = f(prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "twokey_drift_detected",
		Help: "1 if the environment's last drift check found drift, 0 if it was clean."}, env)).(*prometheus.GaugeVec)
	m.grants = f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "twokey_breakglass_grants_active",
		Help: "Break-glass grants active now (as of the last sweep)."})).(prometheus.Gauge)
	m.mintSeconds = f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "twokey_vault_mint_duration_seconds",
		Help:    "How long minting a Vault credential took, by kind (run: plan and apply tokens, breakglass).",
		Buckets: prometheus.DefBuckets}, []string{"kind"})).(*prometheus.HistogramVec)
	m.mintFailures = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_vault_mint_failures_total",
		Help: "Vault credentials that could not be minted, by kind."}, []string{"kind"})).(*prometheus.CounterVec)
	m.apiErrors = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_api_errors_total",
		Help: "Slack and GitHub API calls that failed, by api and kind (transport, http_4xx, http_5xx, not_ok: Slack's ok=false)."},
		[]string{"api", "kind"})).(*prometheus.CounterVec)
	m.rateLimited = f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twokey_api_rate_limited_total",
		Help: "Slack and GitHub API calls answered 429 (rate limited)."}, []string{"api"})).(*prometheus.CounterVec)
	up := f(prometheus.NewGauge(prometheus.GaugeOpts{Name: "twokey_up", Help: "1 while this twokey process runs.",
		ConstLabels: prometheus.Labels{"role": role}})).(prometheus.Gauge)
	up.Set(1)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every refusal reason and API error kind is there from the start, so
	// rate() sees the first one.
	for _, api := range []string{"slack", "github"} {
		m.rateLimited.WithLabelValues(api)
		for _, k := range []string{"transport", "http_4xx", "http_5xx", "not_ok"} {
			m.apiErrors.WithLabelValues(api, k)
		}
	}
	for _, k := range []string{"run", "breakglass"} {
		m.mintFailures.WithLabelValues(k)
	}
	return m
}

// Handler serves the metrics in Prometheus's text format. A metric that
// cannot be read (a runner queue while Redis is down) is left out; the
// rest are served, so an outage does not hide twokey_up and the errors.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Planned implements change.Stats.
func (m *Metrics) Planned(project, env, result string, took time.Duration) {
	m.plans.WithLabelValues(project, env, result).Inc()
	if took > 0 {
		m.planSeconds.WithLabelValues(project, env).Observe(took.Seconds())
	}
}

// Approved implements change.Stats.
func (m *Metrics) Approved(project, env string) { m.approvals.WithLabelValues(project, env).Inc() }

// Refused implements change.Stats.
func (m *Metrics) Refused(reason string) { m.refusals.WithLabelValues(reason).Inc() }

// Applied implements change.Stats.
func (m *Metrics) Applied(project, env, result string, took time.Duration) {
	m.applies.WithLabelValues(project, env, result).Inc()
	if took > 0 {
		m.applySeconds.WithLabelValues(project, env).Observe(took.Seconds())
	}
}

// LockBusy implements change.Stats.
func (m *Metrics) LockBusy(project, env string) { m.lockBusy.WithLabelValues(project, env).Inc() }

// Drift implements change.Stats.
func (m *Metrics) Drift(project, env string, drifted bool) {
	result, v := "clean", 0.0
	if drifted {
		result, v = "drift", 1
	}
	m.drifts.WithLabelValues(project, env, result).Inc()
	m.drifted.WithLabelValues(project, env).Set(v)
}

// GrantsActive implements change.Stats.
func (m *Metrics) GrantsActive(n int) { m.grants.Set(float64(n)) }

// Minted records one Vault mint of kind (run, breakglass): how long it
// took, and whether it failed.
func (m *Metrics) Minted(kind string, took time.Duration, err error) {
	m.mintSeconds.WithLabelValues(kind).Observe(took.Seconds())
	if err != nil {
		m.mintFailures.WithLabelValues(kind).Inc()
	}
}

// Queue is one runner pool's queue: jobs waiting or running, and when the
// oldest of them was queued (zero: none).
type Queue struct {
	Depth  int64
	Oldest time.Time
}

// Queues exports the runner pools' queues, read by read at each scrape
// (within 2 s; a scrape whose read fails leaves the queue metrics out).
func (m *Metrics) Queues(read func(ctx context.Context) (map[string]Queue, error)) {
	m.reg.MustRegister(&queues{read: read, now: time.Now,
		depth: prometheus.NewDesc("twokey_queue_depth", "Jobs in a runner pool's queue, waiting or running.", []string{"pool"}, nil),
		oldest: prometheus.NewDesc("twokey_queue_oldest_job_age_seconds",
			"Age of the oldest job in a runner pool's queue, waiting or running; 0 when empty.", []string{"pool"}, nil)})
}

type queues struct {
	read          func(ctx context.Context) (map[string]Queue, error)
	now           func() time.Time
	depth, oldest *prometheus.Desc
}

func (q *queues) Describe(ch chan<- *prometheus.Desc) { ch <- q.depth; ch <- q.oldest }

func (q *queues) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got, err := q.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(q.depth, err)
		return
	}
	for pool, s := range got {
		ch <- prometheus.MustNewConstMetric(q.depth, prometheus.GaugeValue, float64(s.Depth), pool)
		age := 0.0
		if !s.Oldest.IsZero() {
			age = q.now().Sub(s.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(q.oldest, prometheus.GaugeValue, age, pool)
	}
}
