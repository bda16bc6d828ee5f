package change

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// In-memory fakes, for the fast property test of the service. The real
// adapters (redisstore, redislock, redisaudit) and Slack run under the
// smaller property test in package bot and the end-to-end tests.

type memStore struct {
	mu     sync.Mutex
	plans  map[string]approvals.Plan
	order  []string
	grants map[string]approvals.BreakGlass
	keys   map[string]bool
	promos map[string]time.Time
	// got, if set, is told of every Get.
	got func(id string)
}

func newMemStore() *memStore {
	return &memStore{plans: map[string]approvals.Plan{}, grants: map[string]approvals.BreakGlass{}, keys: map[string]bool{},
		promos: map[string]time.Time{}}
}

func (m *memStore) Create(_ context.Context, p approvals.Plan) (approvals.Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.plans[p.ID]; ok {
		return p, approvals.ErrExists
	}
	p.Version = 1
	m.plans[p.ID] = p
	m.order = append(m.order, p.ID)
	return p, nil
}

func (m *memStore) Get(_ context.Context, id string) (approvals.Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.got != nil {
		m.got(id)
	}
	p, ok := m.plans[id]
	if !ok {
		return p, approvals.ErrNotFound
	}
	return p, nil
}

func (m *memStore) Put(_ context.Context, p approvals.Plan) (approvals.Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.plans[p.ID]
	if !ok {
		return p, approvals.ErrNotFound
	}
	if cur.Version != p.Version {
		return p, approvals.ErrConflict
	}
	p.Version++
	m.plans[p.ID] = p
	return p, nil
}

func (m *memStore) Active(context.Context) ([]approvals.Plan, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []approvals.Plan
	for _, id := range m.order {
		if p := m.plans[id]; !p.Status.Terminal() {
			out = append(out, p)
		}
	}
	return out, nil
}

func (m *memStore) CreateGrant(_ context.Context, g approvals.BreakGlass) (approvals.BreakGlass, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g.Version = 1
	m.grants[g.ID] = g
	return g, nil
}

func (m *memStore) GetGrant(_ context.Context, id string) (approvals.BreakGlass, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.grants[id]
	if !ok {
		return g, approvals.ErrNotFound
	}
	return g, nil
}

func (m *memStore) PutGrant(_ context.Context, g approvals.BreakGlass) (approvals.BreakGlass, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.grants[g.ID]; cur.Version != g.Version {
		return g, approvals.ErrConflict
	}
	g.Version++
	m.grants[g.ID] = g
	return g, nil
}

func (m *memStore) OpenGrants(context.Context) ([]approvals.BreakGlass, error) { return nil, nil }

func (m *memStore) First(_ context.Context, key string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[key] {
		return false, nil
	}
	m.keys[key] = true
	return true, nil
}

func (m *memStore) Forget(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, key)
	return nil
}

func (m *memStore) RecordApplied(_ context.Context, project, env, sha string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.promos[project+"/"+env+"/"+sha] = at
	return nil
}

func (m *memStore) AppliedAt(_ context.Context, project, env, sha string) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.promos[project+"/"+env+"/"+sha]
	return at, ok, nil
}

func (m *memStore) RecentApplied(context.Context, string, string, int) ([]approvals.Applied, error) {
	return nil, nil
}

// memLocks: leases that do not expire (the test's clock never reaches a
// lock's TTL without a plan's TTL passing first), with fences.
type memLocks struct {
	mu     sync.Mutex
	held   map[string]runner.Holder
	owners map[string]string
	fence  int64
	n      int
}

func newMemLocks() *memLocks {
	return &memLocks{held: map[string]runner.Holder{}, owners: map[string]string{}}
}

func (l *memLocks) Acquire(_ context.Context, key string, h runner.Holder, _ time.Duration) (runner.Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[key]; ok {
		return runner.Lease{}, &runner.LockedError{Key: key, Holder: cur}
	}
	return l.grant(key, h), nil
}

func (l *memLocks) grant(key string, h runner.Holder) runner.Lease {
	l.fence++
	l.n++
	h.Fence = l.fence
	l.held[key] = h
	l.owners[key] = fmt.Sprint("owner-", l.n)
	return runner.Lease{Key: key, Owner: l.owners[key], Fence: l.fence}
}

func (l *memLocks) holds(le runner.Lease) bool {
	h, ok := l.held[le.Key]
	return ok && l.owners[le.Key] == le.Owner && h.Fence == le.Fence
}

func (l *memLocks) Refresh(_ context.Context, le runner.Lease, _ time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holds(le) {
		return runner.ErrLockLost
	}
	return nil
}

func (l *memLocks) Release(_ context.Context, le runner.Lease) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holds(le) {
		delete(l.held, le.Key)
	}
	return nil
}

func (l *memLocks) Holder(_ context.Context, key string) (runner.Holder, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.held[key]
	return h, ok, nil
}

func (l *memLocks) Takeover(_ context.Context, old runner.Lease, h runner.Holder, _ time.Duration) (runner.Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.holds(old) {
		return runner.Lease{}, runner.ErrLockLost
	}
	return l.grant(old.Key, h), nil
}

func (l *memLocks) ForceRelease(_ context.Context, key string) (runner.Holder, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.held[key]
	delete(l.held, key)
	return h, ok, nil
}

// fakeRunner plans instantly and records every apply.
type fakeRunner struct {
	mu      sync.Mutex
	head    string
	applies map[string][]string
	authors []approvals.Author   // who wrote every revision
	policy  approvals.Assessment // what policy finds in every plan
	// detached: the caller of Plan stops waiting (runner.ErrDetached).
	detached bool
	// before and during, if set, run inside Plan before the preview is
	// given and once it is.
	before, during func(job runner.PlanJob)
	// preview, if set, is what the preview says instead of the plan.
	preview *approvals.Summary
}

func (r *fakeRunner) Resolve(_ context.Context, repo string, ref runner.Ref) (runner.Revision, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return runner.Revision{Repo: repo, Ref: ref, PR: ref.PR, SHA: r.head, Title: "change", Authors: r.authors}, nil
}

func (r *fakeRunner) Plan(_ context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	d := sha256.Sum256([]byte(job.PlanID + job.Rev.SHA))
	sum := approvals.Summary{Add: 1, Resources: []approvals.Resource{{Address: "terraform_data.a", Action: approvals.ActionCreate}}}
	if r.before != nil {
		r.before(job)
	}
	if job.Preview != nil && r.preview != nil {
		job.Preview(*r.preview)
	} else if job.Preview != nil {
		job.Preview(sum)
	}
	if r.during != nil {
		r.during(job)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if r.detached {
		err = runner.ErrDetached
	}
	return runner.PlanResult{Digest: hex.EncodeToString(d[:]), Summary: sum, Policy: r.policy}, err
}

func (r *fakeRunner) Apply(_ context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applies[job.Permit.PlanID()] = append(r.applies[job.Permit.PlanID()], fmt.Sprint(job.Permit.Approvers()))
	return runner.ApplyResult{Summary: "1 added, 0 changed, 0 destroyed"}, nil
}

func (r *fakeRunner) Discard(context.Context, string) error { return nil }
func (r *fakeRunner) Drift(context.Context, runner.DriftJob) (runner.DriftResult, error) {
	return runner.DriftResult{}, nil
}
func (r *fakeRunner) BreakGlass(context.Context, runner.BreakGlassJob) (runner.Wrapped, error) {
	return runner.Wrapped{}, runner.ErrNoBreakGlass
}
func (r *fakeRunner) TokenAlive(context.Context, string, string, string) (bool, error) {
	return false, nil
}
func (r *fakeRunner) RevokeBreakGlass(context.Context, string, string, string, ...string) error {
	return nil
}

// nopAudit records nothing.
type nopAudit struct{}

func (nopAudit) Record(context.Context, audit.Event) error { return nil }
func (nopAudit) Newest(context.Context, int, int, func(audit.Event) bool) ([]audit.Event, error) {
	return nil, nil
}
func (nopAudit) Since(context.Context, time.Time) ([]audit.Event, error) { return nil, nil }

// groups is a directory of group members.
type groups struct {
	mu      sync.Mutex
	members map[string][]string
}

func (g *groups) InAnyGroup(_ context.Context, user string, groups []string, _ bool) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, grp := range groups {
		if slices.Contains(g.members[grp], user) {
			return true, nil
		}
	}
	return false, nil
}

func (g *groups) Name(_ context.Context, user string) string { return user }

// quiet is a Notifier that shows nothing and gives every message a place.
type quiet struct{}

func (quiet) ShowPlan(_ context.Context, p approvals.Plan) (Posted, error) {
	return Posted{Thread: Thread{Channel: p.Channel, TS: "1.0"}}, nil
}
func (quiet) ShowGrant(_ context.Context, g approvals.BreakGlass) (Posted, error) {
	return Posted{Thread: Thread{Channel: g.Channel, TS: "1.0"}}, nil
}
func (quiet) Note(context.Context, Thread, string) error             { return nil }
func (quiet) Attach(context.Context, Thread, string, string, string) {}
func (quiet) Tell(context.Context, string, string, string)           {}
func (quiet) DM(context.Context, string, string) error               { return nil }
func (quiet) DeliverToken(context.Context, approvals.BreakGlass, runner.Wrapped) (Thread, error) {
	return Thread{}, nil
}
func (quiet) AskReview(context.Context, approvals.BreakGlass, string) error { return nil }
func (quiet) Describe(err error) string                                     { return err.Error() }
