package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/audit/redisaudit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/redislock"
)

var full = flag.Bool("twokey.full", false, "run the property tests at full size")

// fakeRunner plans instantly and records every apply; its break-glass
// tokens are names, alive until revoked.
type fakeRunner struct {
	mu      sync.Mutex
	head    string // the PR's current head commit
	applies map[string][]string
	now     func() time.Time
	bgErr   error           // BreakGlass fails with this
	revoked map[string]bool // accessors revoked
	drifts  int
}

func (r *fakeRunner) Resolve(_ context.Context, repo string, ref runner.Ref) (runner.Revision, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return runner.Revision{Repo: repo, Ref: ref, PR: ref.PR, SHA: r.head, Title: "change"}, nil
}

func (r *fakeRunner) Plan(_ context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	d := sha256.Sum256([]byte(job.PlanID + job.Rev.SHA))
	return runner.PlanResult{Digest: hex.EncodeToString(d[:]), Summary: approvals.Summary{Add: 1,
		Resources: []approvals.Resource{{Address: "terraform_data.a", Action: approvals.ActionCreate}}}}, nil
}

func (r *fakeRunner) Apply(_ context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applies[job.Permit.PlanID()] = append(r.applies[job.Permit.PlanID()], fmt.Sprint(job.Permit.Approvers()))
	return runner.ApplyResult{Summary: "1 added, 0 changed, 0 destroyed"}, nil
}

func (r *fakeRunner) Discard(context.Context, string) error { return nil }

func (r *fakeRunner) Drift(_ context.Context, job runner.DriftJob) (runner.DriftResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drifts++
	return runner.DriftResult{SHA: job.Rev.SHA}, nil
}

func (r *fakeRunner) BreakGlass(_ context.Context, job runner.BreakGlassJob) (runner.Wrapped, error) {
	if r.bgErr != nil {
		return runner.Wrapped{}, r.bgErr
	}
	now := r.now()
	return runner.Wrapped{WrapToken: "hvs.wrap-" + job.GrantID, WrapAccessor: "wacc-" + job.GrantID, Accessor: "acc-" + job.GrantID,
		CreationPath: "auth/token/create/" + job.Target.BreakGlass.Role, Expires: now.Add(job.TTL), WrapExpires: now.Add(5 * time.Minute)}, nil
}

func (r *fakeRunner) TokenAlive(_ context.Context, _, _, accessor string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.revoked[accessor], nil
}

func (r *fakeRunner) RevokeBreakGlass(_ context.Context, _, _, _ string, accessors ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range accessors {
		r.revoked[a] = true
	}
	return nil
}

// fakeWrapping answers wrapping lookups: a token in used was unwrapped.
type fakeWrapping struct {
	mu   sync.Mutex
	used map[string]bool
	path string // if set, the creation path every token claims
}

func (f *fakeWrapping) LookupWrapping(_ context.Context, token string) (runner.WrapInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used[token] {
		return runner.WrapInfo{}, runner.ErrWrapping
	}
	path := f.path
	if path == "" {
		path = "auth/token/create/twokey-staging-breakglass"
	}
	return runner.WrapInfo{CreationPath: path}, nil
}

// policyHarness is a bot wired to a real redis-server, a local Slack and a fake
// runner, with a clock the test moves.
type policyHarness struct {
	b      *Bot
	cfg    *config.Config // the service's
	svc    *change.Service
	audit  *redisaudit.Log
	slack  *slacksim.Server
	rdb    *redis.Client // a real redis-server's
	run    *fakeRunner
	wrap   *fakeWrapping
	store  *redisstore.Store
	now    time.Time
	nextID int
}

const (
	pAlice, pBob, pCarol, pErin, pDave, pMallory = "UALICE", "UBOB", "UCAROL", "UERIN", "UDAVE", "UMALLORY"
	pChannel, pGroup, pTeam                      = "CDEPLOY", "SAPPROVERS", "T0TWOKEY"
)

func newPolicyHarness(t testing.TB) *policyHarness {
	t.Helper()
	h := &policyHarness{now: time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC), wrap: &fakeWrapping{used: map[string]bool{}},
		run: &fakeRunner{applies: map[string][]string{}, revoked: map[string]bool{}}}
	h.run.now = func() time.Time { return h.now }
	h.slack = slacksim.New(slacksim.Options{})
	for _, u := range []string{pAlice, pBob, pCarol, pErin, pDave} {
		h.slack.AddUser(slacksim.User{ID: u, Name: u})
	}
	h.slack.AddUser(slacksim.User{ID: pMallory, Name: "mallory", TeamID: "T0OTHER"})
	h.slack.AddChannel(pChannel, "deploys")
	srv := httptest.NewServer(h.slack.Handler())
	t.Cleanup(srv.Close)

	rdb := redis.NewClient(&redis.Options{Addr: stacktest.Redis(t).Addr})
	h.rdb = rdb
	t.Cleanup(func() { rdb.Close() })
	h.store = redisstore.New(rdb, "t:", 0)
	auditLog, err := redisaudit.New(rdb, redisaudit.Options{Prefix: "t:"})
	if err != nil {
		t.Fatal(err)
	}
	protected := true
	cfg := &config.Config{
		Slack: config.Slack{APIURL: srv.URL + "/api/", TeamID: pTeam},
		// Everyone is linked to a GitHub account that wrote nothing here.
		Identities: linked(pAlice, pBob, pCarol, pErin, pDave, pMallory),
		Projects: []config.Project{{Name: "infra", Repo: "acme/infra", Environments: []config.Environment{{
			Name: "staging", Protected: &protected, RequiredApprovals: 2,
			Approvers: config.Who{Users: []string{pErin}, Groups: []string{pGroup}},
			LockTTL:   config.Duration(time.Minute), PlanTTL: config.Duration(time.Hour),
			PlanTimeout: config.Duration(time.Minute), ApplyTimeout: config.Duration(time.Minute),
		}}}},
	}
	h.audit = auditLog
	h.cfg = cfg
	h.b, err = New(Options{APIURL: cfg.Slack.APIURL, TeamID: cfg.Slack.TeamID, Scope: func(_, env string) string { return env }, BotToken: "xoxb-sim", AppToken: "xapp-sim", Now: func() time.Time { return h.now }, GroupTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	h.svc, err = change.New(change.Options{
		Config: cfg, Store: h.store, Grants: h.store, Locks: redislock.New(rdb, "t:"),
		Runner: h.run, Target: func(project, env string) (runner.Target, error) {
			return runner.Target{Project: project, Env: env, BreakGlass: &runner.BreakGlassTarget{Role: "twokey-" + env + "-breakglass"}}, nil
		}, Dedup: h.store, Promos: h.store, Audit: auditLog, History: auditLog, Wrapping: h.wrap,
		Directory: h.b.Directory(), Notify: h.b, Now: func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.b.svc = h.svc
	return h
}

func (h *policyHarness) envelope() string {
	h.nextID++
	return fmt.Sprintf("env-%d", h.nextID)
}

func (h *policyHarness) command(env, user, text string) {
	h.b.handleCommand(context.Background(), env, slack.SlashCommand{TeamID: pTeam, ChannelID: pChannel, UserID: user, Text: text})
}

func (h *policyHarness) press(env, user, action, planID string) {
	team := pTeam
	if user == pMallory {
		team = "T0OTHER"
	}
	cb := slack.InteractionCallback{
		Type: slack.InteractionTypeBlockActions, Team: slack.Team{ID: team},
		User: slack.User{ID: user, TeamID: team}, Channel: slack.Channel{GroupConversation: slack.GroupConversation{Conversation: slack.Conversation{ID: pChannel}}},
	}
	cb.ActionCallback.BlockActions = []*slack.BlockAction{{ActionID: action, Value: planID}}
	h.b.handleInteraction(context.Background(), env, cb)
}

// openPlan returns the ID of the plan waiting for approval, or "".
func (h *policyHarness) openPlan(t testing.TB) string {
	plans, err := h.store.Active(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if p.Status == approvals.StatusPending {
			return p.ID
		}
	}
	return ""
}

// model is the reference: what the two-person rule says should happen.
type model struct {
	current    string // the newest plan
	open       bool   // it still waits for approvals
	approvers  []string
	headMoved  bool // the PR has a new commit since current was planned
	expired    bool
	group      map[string]bool
	applied    map[string][]string
	everPlans  []string
	lastAction struct{ env, user, action, plan string }
}

func (m *model) authorized(u string) bool { return u == pErin || m.group[u] }

// TestApprovalPolicy runs random sequences of clicks — authorized,
// unauthorized, by the requester, duplicated, after removal from the group,
// from another workspace, after a re-plan, after a new commit, after expiry,
// rejections — through the bot, and checks that an apply happens exactly
// when the model says quorum was reached on the plan as planned.
func TestApprovalPolicy(t *testing.T) {
	sequences := 1500
	if *full {
		sequences = 10000
	}
	h := newPolicyHarness(t)
	rng := rand.New(rand.NewPCG(2026, 11))
	users := []string{pBob, pCarol, pErin, pDave, pAlice, pMallory}
	start := time.Now()
	events := 0
	for seq := range sequences {
		if err := h.rdb.FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		h.run.mu.Lock()
		h.run.head = fmt.Sprintf("%040x", seq)
		h.run.applies = map[string][]string{}
		h.run.mu.Unlock()
		h.slack.SetGroup(pGroup, pBob, pCarol)
		m := &model{group: map[string]bool{pBob: true, pCarol: true}, applied: map[string][]string{}}
		trace := []string{}

		replan := func() {
			h.command(h.envelope(), pAlice, "plan staging pr-1")
			id := h.openPlan(t)
			if id == "" || id == m.current {
				t.Fatalf("seq %d: no new plan after /tf plan (trace %v)", seq, trace)
			}
			m.current, m.open, m.approvers, m.headMoved, m.expired = id, true, nil, false, false
			m.everPlans = append(m.everPlans, id)
		}
		replan()
		for range 4 + rng.IntN(10) {
			events++
			h.now = h.now.Add(time.Second)
			switch r := rng.IntN(100); {
			case r < 55: // someone clicks Approve, mostly on the newest plan
				u := users[rng.IntN(len(users))]
				target := m.current
				if len(m.everPlans) > 1 && rng.IntN(4) == 0 {
					target = m.everPlans[rng.IntN(len(m.everPlans)-1)]
				}
				env := h.envelope()
				m.lastAction = struct{ env, user, action, plan string }{env, u, actionApprove, target}
				trace = append(trace, "approve "+u+" "+target)
				h.press(env, u, actionApprove, target)
				if target == m.current && m.open && !m.expired && u != pAlice && u != pMallory &&
					m.authorized(u) && !slices.Contains(m.approvers, u) {
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
				if target == m.current && m.open && m.expired && u != pMallory {
					m.open = false // the click finds the plan expired and voids it
				}
			case r < 62: // Slack redelivers the last click
				if m.lastAction.env != "" {
					trace = append(trace, "redeliver")
					h.press(m.lastAction.env, m.lastAction.user, m.lastAction.action, m.lastAction.plan)
				}
			case r < 70: // someone leaves or rejoins the approvers group
				u := []string{pBob, pCarol}[rng.IntN(2)]
				m.group[u] = !m.group[u]
				var members []string
				for _, g := range []string{pBob, pCarol} {
					if m.group[g] {
						members = append(members, g)
					}
				}
				trace = append(trace, fmt.Sprintf("group %v", members))
				h.slack.SetGroup(pGroup, members...)
			case r < 78: // the requester plans the same PR again
				trace = append(trace, "replan")
				replan()
			case r < 85: // a new commit lands on the PR
				trace = append(trace, "commit")
				h.run.mu.Lock()
				h.run.head = fmt.Sprintf("%040x", rng.Uint64())
				h.run.mu.Unlock()
				m.headMoved = true
			case r < 90: // the plan's TTL passes
				trace = append(trace, "expire")
				h.now = h.now.Add(61 * time.Minute)
				m.expired = true
			default: // someone clicks Reject
				u := users[rng.IntN(len(users))]
				trace = append(trace, "reject "+u)
				h.press(h.envelope(), u, actionReject, m.current)
				if m.open && u != pMallory && (u == pAlice || m.authorized(u)) {
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
	t.Logf("%d sequences, %d events, checked in %v", sequences, events, time.Since(start).Round(time.Millisecond))
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
