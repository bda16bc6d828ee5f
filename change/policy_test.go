package change

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

var full = flag.Bool("twokey.full", false, "run the property tests at full size")

const (
	pAlice, pBob, pCarol, pErin, pDave = "UALICE", "UBOB", "UCAROL", "UERIN", "UDAVE"
	pChannel, pGroup                   = "CDEPLOY", "SAPPROVERS"
)

// harness is a service over in-memory stores, a fake runner and a clock
// the test moves.
type harness struct {
	svc   *Service
	store *memStore
	run   *fakeRunner
	dir   *groups
	now   time.Time
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{now: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC), run: &fakeRunner{applies: map[string][]string{}},
		dir: &groups{members: map[string][]string{}}}
	protected := true
	cfg := &config.Config{
		// Everyone is linked to a GitHub account that wrote nothing here.
		Identities: linked(pAlice, pBob, pCarol, pErin, pDave),
		Projects: []config.Project{{Name: "infra", Repo: "acme/infra", Environments: []config.Environment{{
			Name: "staging", Protected: &protected, RequiredApprovals: 2,
			Approvers: config.Who{Users: []string{pErin}, Groups: []string{pGroup}},
			LockTTL:   config.Duration(time.Minute), PlanTTL: config.Duration(time.Hour),
			PlanTimeout: config.Duration(time.Minute), ApplyTimeout: config.Duration(time.Minute),
		}}}},
	}
	h.reset()
	var err error
	h.svc, err = New(Options{Config: cfg, Store: h.store, Grants: h.store, Locks: newMemLocks(), Runner: h.run,
		Target: func(project, env string) (runner.Target, error) {
			return runner.Target{Project: project, Env: env}, nil
		},
		Dedup: h.store, Promos: h.store, Audit: nopAudit{}, History: nopAudit{}, Directory: h.dir, Notify: quiet{},
		Now: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// reset empties the stores between sequences.
func (h *harness) reset() {
	if h.store == nil {
		h.store = newMemStore()
	} else {
		fresh := newMemStore()
		h.store.mu.Lock()
		h.store.plans, h.store.order, h.store.grants, h.store.keys, h.store.promos = fresh.plans, nil, fresh.grants, fresh.keys, fresh.promos
		h.store.mu.Unlock()
	}
	if h.svc != nil {
		h.svc.o.Locks.(*memLocks).mu.Lock()
		clear(h.svc.o.Locks.(*memLocks).held)
		h.svc.o.Locks.(*memLocks).mu.Unlock()
	}
}

func (h *harness) openPlan(t testing.TB) string {
	plans, _ := h.store.Active(context.Background())
	for _, p := range plans {
		if p.Status == "pending" {
			return p.ID
		}
	}
	return ""
}

// model is the reference: what the two-person rule says should happen.
type model struct {
	current   string
	open      bool
	approvers []string
	headMoved bool
	expired   bool
	group     map[string]bool
	applied   map[string][]string
	everPlans []string
	last      struct{ user, plan string }
}

func (m *model) authorized(u string) bool { return u == pErin || m.group[u] }

// TestApprovalPolicyService runs random sequences of decisions —
// authorized, unauthorized, by the requester, duplicated, after removal
// from the group, after a re-plan, after a new commit, after expiry,
// rejections — straight into the service, and checks that an apply happens
// exactly when the model says quorum was reached on the plan as planned.
// The same property, fewer sequences, through Slack payloads:
// bot.TestApprovalPolicy.
func TestApprovalPolicyService(t *testing.T) {
	sequences := 5000
	if *full {
		sequences = 50000
	}
	if testing.Short() {
		sequences = 1000
	}
	h := newHarness(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(2026, 11))
	users := []string{pBob, pCarol, pErin, pDave, pAlice}
	plan, err := commands.Parse("plan staging pr-1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	events := 0
	for seq := range sequences {
		h.reset()
		h.run.mu.Lock()
		h.run.head = fmt.Sprintf("%040x", seq)
		h.run.applies = map[string][]string{}
		h.run.mu.Unlock()
		h.dir.members[pGroup] = []string{pBob, pCarol}
		m := &model{group: map[string]bool{pBob: true, pCarol: true}, applied: map[string][]string{}}
		trace := []string{}

		replan := func() {
			_ = h.svc.Plan(ctx, pChannel, pAlice, plan.(commands.Plan))
			id := h.openPlan(t)
			if id == "" || id == m.current {
				t.Fatalf("seq %d: no new plan after /tf plan (trace %v)", seq, trace)
			}
			m.current, m.open, m.approvers, m.headMoved, m.expired = id, true, nil, false, false
			m.everPlans = append(m.everPlans, id)
		}
		approve := func(u, target string) {
			trace = append(trace, "approve "+u+" "+target)
			_ = h.svc.Approve(ctx, pChannel, u, target)
			if target == m.current && m.open && !m.expired && u != pAlice && m.authorized(u) && !slices.Contains(m.approvers, u) {
				m.approvers = append(m.approvers, u)
				// Right before the apply, whoever lost the right since their
				// click no longer counts; the plan waits for others.
				if len(m.approvers) >= 2 {
					m.approvers = slices.DeleteFunc(m.approvers, func(a string) bool { return !m.authorized(a) })
				}
				if len(m.approvers) >= 2 {
					m.open = false
					if !m.headMoved {
						m.applied[m.current] = append(m.applied[m.current], fmt.Sprint(m.approvers))
					}
				}
			}
			if target == m.current && m.open && m.expired {
				m.open = false // the click finds the plan expired and voids it
			}
		}
		replan()
		for range 4 + rng.IntN(10) {
			events++
			h.now = h.now.Add(time.Second)
			switch r := rng.IntN(100); {
			case r < 55:
				u := users[rng.IntN(len(users))]
				target := m.current
				if len(m.everPlans) > 1 && rng.IntN(4) == 0 {
					target = m.everPlans[rng.IntN(len(m.everPlans)-1)]
				}
				m.last = struct{ user, plan string }{u, target}
				approve(u, target)
			case r < 62: // the same decision again: a double-click
				if m.last.user != "" {
					trace = append(trace, "again")
					approve(m.last.user, m.last.plan)
				}
			case r < 70:
				u := []string{pBob, pCarol}[rng.IntN(2)]
				m.group[u] = !m.group[u]
				var members []string
				for _, g := range []string{pBob, pCarol} {
					if m.group[g] {
						members = append(members, g)
					}
				}
				trace = append(trace, fmt.Sprintf("group %v", members))
				h.dir.members[pGroup] = members
			case r < 78:
				trace = append(trace, "replan")
				replan()
			case r < 85:
				trace = append(trace, "commit")
				h.run.mu.Lock()
				h.run.head = fmt.Sprintf("%040x", rng.Uint64())
				h.run.mu.Unlock()
				m.headMoved = true
			case r < 90:
				trace = append(trace, "expire")
				h.now = h.now.Add(61 * time.Minute)
				m.expired = true
			default:
				u := users[rng.IntN(len(users))]
				trace = append(trace, "reject "+u)
				_ = h.svc.Reject(ctx, pChannel, u, m.current)
				if m.open && (u == pAlice || m.authorized(u)) {
					m.open = false
				}
			}
		}
		h.run.mu.Lock()
		got := h.run.applies
		h.run.mu.Unlock()
		if fmt.Sprint(sortedMap(got)) != fmt.Sprint(sortedMap(m.applied)) {
			t.Fatalf("sequence %d: applies = %v, model says %v\ntrace: %v", seq, got, m.applied, trace)
		}
	}
	took := time.Since(start)
	t.Logf("%d sequences, %d events, checked in %v (%.0f sequences/s)", sequences, events, took.Round(time.Millisecond),
		float64(sequences)/took.Seconds())
}

func sortedMap(m map[string][]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+fmt.Sprint(v))
	}
	sort.Strings(out)
	return out
}

// linked lists a GitHub identity for each user.
func linked(users ...string) []config.Identity {
	var out []config.Identity
	for i, u := range users {
		out = append(out, config.Identity{Slack: u, GitHub: "gh-" + strings.ToLower(u), GitHubID: int64(100 + i)})
	}
	return out
}
