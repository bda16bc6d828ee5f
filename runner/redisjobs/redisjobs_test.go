package redisjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/ref"
	"github.com/twokey/twokey/runner"
)

// fakeExec stands in for the runner: it records what it ran.
type fakeExec struct {
	plans, applies atomic.Int32
	minted         atomic.Int32  // break-glass tokens
	block          chan struct{} // if set, Plan waits on it
	progress       []string
}

func (f *fakeExec) Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	f.plans.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return runner.PlanResult{}, ctx.Err()
		}
	}
	if job.Preview != nil {
		job.Preview(approvals.Summary{Add: 1, Changes: true})
	}
	return runner.PlanResult{Digest: "digest-" + job.PlanID, Summary: approvals.Summary{Add: 1}}, nil
}

func (f *fakeExec) Apply(_ context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	f.applies.Add(1)
	for _, l := range f.progress {
		job.Progress(l)
	}
	if job.Permit.Env() == "failing" {
		return runner.ApplyResult{}, &runner.TerraformError{Step: "apply", Output: "boom"}
	}
	return runner.ApplyResult{Summary: "1 added, 0 changed, 0 destroyed", Accessor: "acc"}, nil
}

func (f *fakeExec) Drift(_ context.Context, job runner.DriftJob) (runner.DriftResult, error) {
	return runner.DriftResult{SHA: job.Rev.SHA, Summary: approvals.Summary{Change: 1}}, nil
}

func (f *fakeExec) BreakGlass(_ context.Context, job runner.BreakGlassJob) (runner.Wrapped, error) {
	f.minted.Add(1)
	return runner.Wrapped{WrapToken: "hvs.wrapping-" + job.GrantID, Accessor: "acc-" + job.GrantID, WrapAccessor: "wacc",
		Expires: time.Now().Add(job.TTL)}, nil
}

func (f *fakeExec) TokenAlive(_ context.Context, _, _, accessor string) (bool, error) {
	return accessor == "alive", nil
}

func (f *fakeExec) RevokeBreakGlass(_ context.Context, _, env, _ string, accessors ...string) error {
	if len(accessors) == 0 {
		return errors.New("nothing to revoke")
	}
	return nil
}

type fixture struct {
	signer *attest.Signer    // serve's key
	runner *attest.Signer    // the workers' key (signing.runner_keys)
	notary *approvals.Notary // serve's: seals, signs approvals and grants
	rdb    *redis.Client
	store  *redisstore.Store
	client *Client
	pools  map[string]string // env → pool
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	signer := newSigner(t)
	f := &fixture{signer: signer, runner: newSigner(t), notary: approvals.NewNotary(signer, attest.Keyring{}), rdb: rdb, store: redisstore.New(rdb, "t:", 0), pools: map[string]string{"dev": "nonprod", "prod": "prod", "failing": "nonprod"}}
	f.client = NewClient(ClientOptions{Redis: rdb, Prefix: "t:", PickupTimeout: 5 * time.Second, Signer: signer,
		Runners: attest.NewKeyring(f.runner.Public()),
		Pool:    func(_, env string) (string, error) { return f.pools[env], nil }})
	return f
}

// worker starts a worker of pool; it stops with the test.
func (f *fixture) worker(t *testing.T, pool, name string, exec Executor, visibility time.Duration) {
	t.Helper()
	w, err := NewWorker(WorkerOptions{Redis: f.rdb, Prefix: "t:", Pool: pool, Name: name, Exec: exec, Store: f.store, Notary: f.verifier(), Signer: f.runner,
		Visibility: visibility, Grace: time.Second,
		Target: func(project, env string) (runner.Target, string, error) {
			return runner.Target{Project: project, Env: env}, map[string]string{"dev": "nonprod", "prod": "prod", "failing": "nonprod"}[env], nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// plan stores a plan in the given status and returns it.
func (f *fixture) plan(t *testing.T, id, env string, status approvals.Status) approvals.Plan {
	t.Helper()
	now := time.Now()
	p, err := approvals.New(approvals.Request{ID: id, Project: "infra", Env: env, Ref: ref.Ref{PR: 1}, PR: 1, SHA: "abc",
		Requester: "UREQ", Fence: 1, LockOwner: "o", Required: 2, Protected: true, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if status != approvals.StatusPlanning {
		p, _ = approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, now)
		if p, err = f.notary.Seal(p); err != nil {
			t.Fatal(err)
		}
		p, _, _ = f.notary.Approve(p, "UA", true, now)
		p, _, _ = f.notary.Approve(p, "UB", true, now)
		if status == approvals.StatusApplying {
			if p, _, err = f.notary.BeginApply(p, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	p, err = f.store.Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newSigner is a fresh key.
func newSigner(t testing.TB) *attest.Signer {
	t.Helper()
	s, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newNotary is a serve process's notary, with a fresh key.
func newNotary(t testing.TB) *approvals.Notary {
	return approvals.NewNotary(newSigner(t), attest.Keyring{})
}

// xadd puts a job on a stream as serve does, signed with s (nil: unsigned).
func xadd(t testing.TB, rdb *redis.Client, stream string, s *attest.Signer, body []byte) string {
	t.Helper()
	entry := map[string]any{"job": body}
	if s != nil {
		var err error
		if entry, err = signJob(s, body); err != nil {
			t.Fatal(err)
		}
	}
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: entry}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// verifier is a worker's notary: serve's public keys, no signing key.
func (f *fixture) verifier() *approvals.Notary {
	return approvals.NewNotary(nil, attest.NewKeyring(f.notary.PublicKeys()...))
}

// executorIs reports whether the apply of p was claimed by name.
func (f *fixture) executorIs(t *testing.T, p approvals.Plan, name string) bool {
	t.Helper()
	got, ok := f.client.Executor(context.Background(), p)
	return ok && got == name
}

func (f *fixture) grant(t *testing.T, id string) approvals.Permit {
	t.Helper()
	p, err := f.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	g, err := f.notary.PermitOf(p)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestPlanAndApplyRoundTrip(t *testing.T) {
	f := setup(t)
	exec := &fakeExec{progress: []string{"a: create complete", "b: create complete"}}
	f.worker(t, "nonprod", "w1", exec, time.Second)
	ctx := context.Background()

	f.plan(t, "p-plan", "dev", approvals.StatusPlanning)
	var previews []approvals.Summary
	res, err := f.client.Plan(ctx, runner.PlanJob{PlanID: "p-plan", Rev: runner.Revision{SHA: "abc"},
		Lease: runner.Lease{Key: "infra/dev", Owner: "o", Fence: 1}, Target: runner.Target{Project: "infra", Env: "dev"},
		Preview: func(s approvals.Summary) { previews = append(previews, s) }})
	if err != nil || res.Digest != "digest-p-plan" {
		t.Fatalf("plan: %+v %v", res, err)
	}
	if len(previews) != 1 || previews[0].Add != 1 || !previews[0].Changes {
		t.Fatalf("the worker's preview did not come through: %+v", previews)
	}

	f.plan(t, "p-apply", "dev", approvals.StatusApplying)
	var lines []string
	out, err := f.client.Apply(ctx, runner.ApplyJob{Permit: f.grant(t, "p-apply"), Rev: runner.Revision{SHA: "abc"},
		Progress: func(l string) { lines = append(lines, l) }})
	if err != nil || out.Summary != "1 added, 0 changed, 0 destroyed" || len(lines) != 2 {
		t.Fatalf("apply: %+v %v, progress %q", out, err, lines)
	}
	if p, _ := f.store.Get(ctx, "p-apply"); p.Executor != "" {
		t.Fatalf("the worker wrote to the plan record: executor %q", p.Executor)
	}
	if p, _ := f.store.Get(ctx, "p-apply"); !f.executorIs(t, p, "w1") {
		t.Fatal("apply not claimed by the worker")
	}

	// A terraform error comes back as one: errors.As still finds it.
	f.plan(t, "p-fail", "failing", approvals.StatusApplying)
	_, err = f.client.Apply(ctx, runner.ApplyJob{Permit: f.grant(t, "p-fail"), Rev: runner.Revision{SHA: "abc"}})
	var te *runner.TerraformError
	if !errors.As(err, &te) || te.Step != "apply" || te.Output != "boom" {
		t.Fatalf("terraform error lost on the wire: %#v", err)
	}
}

// A job put on the wrong pool's stream is refused.
func TestWorkerRefusesOtherPools(t *testing.T) {
	f := setup(t)
	exec := &fakeExec{}
	f.worker(t, "nonprod", "w1", exec, time.Second)
	f.pools["prod"] = "nonprod" // misroute prod's job onto the nonprod stream
	f.plan(t, "p-prod", "prod", approvals.StatusApplying)
	_, err := f.client.Apply(context.Background(), runner.ApplyJob{Permit: f.grant(t, "p-prod"), Rev: runner.Revision{SHA: "abc"}})
	if !errors.Is(err, ErrWrongPool) {
		t.Fatalf("err = %v, want ErrWrongPool", err)
	}
	if exec.applies.Load() != 0 {
		t.Fatal("the nonprod worker applied to prod")
	}
}

// A worker that took a plan job and died: another worker of the pool takes
// it over after the visibility timeout and runs it.
func TestDeadWorkersPlanIsTakenOver(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	stream := streamKey("t:", "nonprod")
	f.rdb.XGroupCreateMkStream(ctx, stream, group, "0")
	f.plan(t, "p-orphan", "dev", approvals.StatusPlanning)
	job, _ := json.Marshal(Job{ID: "p-orphan:plan:x", Kind: KindPlan, PlanID: "p-orphan", Project: "infra", Env: "dev",
		Pool: "nonprod", Lease: runner.Lease{Key: "infra/dev", Owner: "o", Fence: 1}, At: time.Now()})
	xadd(t, f.rdb, stream, f.signer, job)
	// The dead worker read it and never came back.
	if err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{stream, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	exec := &fakeExec{}
	f.worker(t, "nonprod", "w2", exec, 300*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if raw, err := f.rdb.Get(ctx, outcomeKey("t:", "nonprod", "p-orphan", KindPlan, "")).Bytes(); err == nil {
			ev, err := openResult(attest.NewKeyring(f.runner.Public()), raw,
				expect{planID: "p-orphan", kind: KindPlan, pool: "nonprod", fence: 1})
			if err != nil || ev.Plan == nil || ev.Worker != "w2" {
				t.Fatalf("outcome = %s", raw)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the orphaned plan job was not taken over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := exec.plans.Load(); n != 1 {
		t.Fatalf("planned %d times", n)
	}
}

// A live worker's long job is heartbeated and not taken over by another.
func TestRunningJobIsNotStolen(t *testing.T) {
	f := setup(t)
	slow := &fakeExec{block: make(chan struct{})}
	other := &fakeExec{}
	f.worker(t, "nonprod", "w1", slow, 300*time.Millisecond)
	f.plan(t, "p-slow", "dev", approvals.StatusPlanning)
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Plan(context.Background(), runner.PlanJob{PlanID: "p-slow", Lease: runner.Lease{Fence: 1},
			Target: runner.Target{Project: "infra", Env: "dev"}})
		done <- err
	}()
	for slow.plans.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	f.worker(t, "nonprod", "w2", other, 300*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // five visibility timeouts
	close(slow.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if other.plans.Load() != 0 {
		t.Fatal("a running job was taken over")
	}
}

// An apply claimed by a worker that died is never run again: the worker
// that takes the job over refuses it as interrupted (serve then marks the
// plan so).
func TestClaimedApplyIsNeverRerun(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.plan(t, "p-claimed", "dev", approvals.StatusApplying)
	p, err := f.store.Get(ctx, "p-claimed")
	if err != nil {
		t.Fatal(err)
	}
	f.rdb.Set(ctx, claimKey("t:", "nonprod", "p-claimed", p.PermitTag()), "dead-worker", time.Hour)
	exec := &fakeExec{}
	f.worker(t, "nonprod", "w2", exec, time.Second)
	_, err = f.client.Apply(ctx, runner.ApplyJob{Permit: f.grant(t, "p-claimed"), Rev: runner.Revision{SHA: "abc"}})
	if !errors.Is(err, runner.ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	if exec.applies.Load() != 0 {
		t.Fatal("a claimed apply was run again")
	}
	if !errors.Is(err, approvals.ErrClaimed) || !strings.Contains(err.Error(), "dead-worker") {
		t.Fatalf("err = %v, want it to name the claim of dead-worker", err)
	}
}

func TestNoRunner(t *testing.T) {
	f := setup(t)
	f.client.o.PickupTimeout = 300 * time.Millisecond
	f.plan(t, "p-none", "prod", approvals.StatusPlanning)
	_, err := f.client.Plan(context.Background(), runner.PlanJob{PlanID: "p-none", Target: runner.Target{Project: "infra", Env: "prod"}})
	if !errors.Is(err, ErrNoRunner) {
		t.Fatalf("err = %v, want ErrNoRunner", err)
	}
}

// The dispatching replica stops waiting; the result is kept for another.
func TestDetachedResultIsKept(t *testing.T) {
	f := setup(t)
	slow := &fakeExec{block: make(chan struct{})}
	f.worker(t, "nonprod", "w1", slow, time.Second)
	f.plan(t, "p-detached", "dev", approvals.StatusPlanning)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		_, err = f.client.Plan(ctx, runner.PlanJob{PlanID: "p-detached", Lease: runner.Lease{Fence: 1},
			Target: runner.Target{Project: "infra", Env: "dev"}})
	})
	for slow.plans.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("err = %v, want ErrDetached", err)
	}
	close(slow.block)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if res, perr, ok := f.client.PlanOutcome(context.Background(), approvals.Plan{ID: "p-detached", Project: "infra", Env: "dev", Fence: 1}); ok {
			if perr != nil || res.Digest != "digest-p-detached" {
				t.Fatalf("outcome = %+v %v", res, perr)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome kept")
		}
	}
}

// BenchmarkDispatch measures a job's round trip through Redis — dispatch,
// pick-up by a waiting worker, result back — with a runner that does nothing.
func BenchmarkDispatch(b *testing.B) {
	srv := stacktest.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	store := redisstore.New(rdb, "b:", 0)
	signer := newSigner(b)
	runnerKey := newSigner(b)
	client := NewClient(ClientOptions{Redis: rdb, Prefix: "b:", Signer: signer, Runners: attest.NewKeyring(runnerKey.Public()),
		Pool: func(string, string) (string, error) { return "nonprod", nil }})
	w, _ := NewWorker(WorkerOptions{Redis: rdb, Prefix: "b:", Pool: "nonprod", Name: "w", Exec: &fakeExec{}, Store: store, Signer: runnerKey,
		Notary: approvals.NewNotary(nil, attest.NewKeyring(signer.Public())),
		Target: func(p, e string) (runner.Target, string, error) {
			return runner.Target{Project: p, Env: e}, "nonprod", nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("p-%d", i)
		p, _ := approvals.New(approvals.Request{ID: id, Project: "infra", Env: "dev", Ref: ref.Ref{PR: 1}, SHA: "abc", Requester: "U",
			Fence: 1, LockOwner: "o", TTL: time.Hour}, time.Now())
		if _, err := store.Create(ctx, p); err != nil {
			b.Fatal(err)
		}
		if _, err := client.Plan(ctx, runner.PlanJob{PlanID: id, Lease: runner.Lease{Fence: 1}, Target: runner.Target{Project: "infra", Env: "dev"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// Break-glass work runs on the environment's pool; the wrapping token
// reaches the client and is then gone from Redis.
func TestBreakGlassJobs(t *testing.T) {
	f := setup(t)
	f.worker(t, "prod", "w-prod", &fakeExec{}, time.Second)
	ctx := context.Background()
	w, err := f.client.BreakGlass(ctx, runner.BreakGlassJob{GrantID: "bg-1", TTL: time.Minute,
		Target: runner.Target{Project: "infra", Env: "prod"}})
	if err != nil || w.WrapToken != "hvs.wrapping-bg-1" || w.Accessor != "acc-bg-1" {
		t.Fatalf("break-glass: %v %+v", err, w)
	}
	for _, key := range f.rdb.Keys(ctx, "t:*").Val() {
		if typ := f.rdb.Type(ctx, key).Val(); typ == "string" && strings.Contains(f.rdb.Get(ctx, key).Val(), "hvs.") {
			t.Errorf("the wrapping token stayed in Redis under %s", key)
		}
		if typ := f.rdb.Type(ctx, key).Val(); typ == "stream" {
			for _, m := range f.rdb.XRange(ctx, key, "-", "+").Val() {
				if raw, _ := m.Values["event"].(string); strings.Contains(raw, "hvs.") {
					t.Errorf("the wrapping token stayed in Redis under %s", key)
				}
			}
		}
	}
	if alive, err := f.client.TokenAlive(ctx, "infra", "prod", "alive"); err != nil || !alive {
		t.Fatalf("alive: %v %v", alive, err)
	}
	if alive, err := f.client.TokenAlive(ctx, "infra", "prod", "gone"); err != nil || alive {
		t.Fatalf("gone: %v %v", alive, err)
	}
	if err := f.client.RevokeBreakGlass(ctx, "infra", "prod", "bg-1", "acc-bg-1", "wacc"); err != nil {
		t.Fatal(err)
	}
	d, err := f.client.Drift(ctx, runner.DriftJob{ID: "bg-1", Rev: runner.Revision{SHA: "head"}, Target: runner.Target{Project: "infra", Env: "prod"}})
	if err != nil || d.SHA != "head" || d.Summary.Change != 1 {
		t.Fatalf("drift: %v %+v", err, d)
	}
}

// recorder is an audit.Recorder that keeps what it was given.
type recorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *recorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

// A Redis writer sets a plan to applying — with made-up approvals, or with
// a grant signed by a key of their own — and puts an apply job on the
// pool's stream. The worker applies nothing and records the refusal.
func TestForgedApplyJobIsRefused(t *testing.T) {
	f := setup(t)
	exec := &fakeExec{}
	rec := &recorder{}
	w, err := NewWorker(WorkerOptions{Redis: f.rdb, Prefix: "t:", Pool: "prod", Name: "w-prod", Exec: exec, Store: f.store,
		Notary: f.verifier(), Signer: f.runner, Audit: rec, Visibility: time.Second, Grace: time.Second,
		Target: func(project, env string) (runner.Target, string, error) {
			return runner.Target{Project: project, Env: env}, "prod", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	rogue := newNotary(t)
	for name, forge := range map[string]func(p approvals.Plan) approvals.Plan{
		"made-up approvals": func(p approvals.Plan) approvals.Plan {
			for _, u := range []string{"UA", "UB"} {
				p.Approvals = append(p.Approvals, approvals.Approval{User: u, Digest: p.Digest, SHA: p.SHA, Fence: p.Fence})
			}
			p.Status = approvals.StatusApplying
			return p
		},
		"permit signed by another key": func(p approvals.Plan) approvals.Plan {
			p, _ = rogue.Seal(p)
			p, _, _ = rogue.Approve(p, "UA", true, time.Now())
			p, _, _ = rogue.Approve(p, "UB", true, time.Now())
			p, _, err := rogue.BeginApply(p, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
	} {
		t.Run(name, func(t *testing.T) {
			id := "p-" + strings.ReplaceAll(name, " ", "-")
			p := f.plan(t, id, "prod", approvals.StatusPlanning)
			p, _ = approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, time.Now())
			p = forge(p)
			if _, err := f.store.Put(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			job, _ := json.Marshal(Job{ID: id + ":apply:x", Kind: KindApply, PlanID: id, Project: "infra", Env: "prod", Pool: "prod",
				Rev: runner.Revision{SHA: "abc"}, At: time.Now()})
			// The job itself is signed (a replayed or misrouted one, say):
			// the grant is what is forged.
			xadd(t, f.rdb, streamKey("t:", "prod"), f.signer, job)
			var ev event
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if raw, err := f.rdb.Get(context.Background(), outcomeKey("t:", "prod", id, KindApply, "")).Bytes(); err == nil {
					if ev, err = openResult(attest.NewKeyring(f.runner.Public()), raw,
						expect{planID: id, kind: KindApply, pool: "prod"}); err != nil {
						t.Fatal(err)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no outcome")
				}
			}
			if err := ev.Err.err(); !errors.Is(err, approvals.ErrForged) {
				t.Fatalf("outcome error = %v, want ErrForged", err)
			}
			if exec.applies.Load() != 0 {
				t.Fatal("the forged job was applied")
			}
			if _, ok := f.client.Executor(context.Background(), p); ok {
				t.Fatal("the forged job was claimed")
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if n := len(rec.events); n == 0 || rec.events[n-1].Type != audit.Forgery || rec.events[n-1].PlanID != id {
				t.Fatalf("refusal not recorded: %+v", rec.events)
			}
		})
	}
}

// BenchmarkApplyDispatch measures an apply's round trip through Redis with
// signing: serve seals the plan, signs two approvals and the grant
// (Notary.BeginApply) and dispatches; the worker verifies the grant and the
// approvals (Notary.GrantOf), claims the apply and reports back; with a
// runner that does nothing.
func BenchmarkApplyDispatch(b *testing.B) {
	srv := stacktest.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	store := redisstore.New(rdb, "b:", 0)
	signer := newSigner(b)
	serve := approvals.NewNotary(signer, attest.Keyring{})
	runnerKey := newSigner(b)
	client := NewClient(ClientOptions{Redis: rdb, Prefix: "b:", Signer: signer, Runners: attest.NewKeyring(runnerKey.Public()),
		Pool: func(string, string) (string, error) { return "prod", nil }})
	w, _ := NewWorker(WorkerOptions{Redis: rdb, Prefix: "b:", Pool: "prod", Name: "w", Exec: &fakeExec{}, Store: store, Signer: runnerKey,
		Notary: approvals.NewNotary(nil, attest.NewKeyring(serve.PublicKeys()...)),
		Target: func(p, e string) (runner.Target, string, error) {
			return runner.Target{Project: p, Env: e}, "prod", nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	for i := 0; b.Loop(); i++ {
		now := time.Now()
		p, _ := approvals.New(approvals.Request{ID: fmt.Sprintf("p-%d", i), Project: "infra", Env: "prod", Ref: ref.Ref{PR: 1}, SHA: "abc",
			Requester: "U", Fence: 1, LockOwner: "o", Required: 2, Protected: true, TTL: time.Hour}, now)
		p, _ = approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, now)
		p, _ = serve.Seal(p)
		p, _, _ = serve.Approve(p, "UA", true, now)
		p, _, _ = serve.Approve(p, "UB", true, now)
		p, g, err := serve.BeginApply(p, now)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := store.Create(ctx, p); err != nil {
			b.Fatal(err)
		}
		if _, err := client.Apply(ctx, runner.ApplyJob{Permit: g, Rev: runner.Revision{SHA: "abc"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// A Redis writer puts jobs on the prod stream: a break-glass job unsigned,
// or signed by a key of their own, a signed job that already ran, and one
// dispatched too long ago. The worker acts on none of them and records each.
func TestUnsignedOrReplayedJobsAreRefused(t *testing.T) {
	f := setup(t)
	exec := &fakeExec{}
	rec := &recorder{}
	w, err := NewWorker(WorkerOptions{Redis: f.rdb, Prefix: "t:", Pool: "prod", Name: "w-prod", Exec: exec, Store: f.store,
		Notary: f.verifier(), Signer: f.runner, Audit: rec, Visibility: time.Second, Grace: time.Second,
		Target: func(project, env string) (runner.Target, string, error) {
			return runner.Target{Project: project, Env: env}, "prod", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// One honest break-glass job, through the client.
	if _, err := f.client.BreakGlass(context.Background(), runner.BreakGlassJob{GrantID: "bg-1", TTL: time.Minute,
		Target: runner.Target{Project: "infra", Env: "prod"}}); err != nil {
		t.Fatal(err)
	}
	honest := f.rdb.XRange(context.Background(), streamKey("t:", "prod"), "-", "+").Val()[0]
	job := func(id string, at time.Time) []byte {
		b, _ := json.Marshal(Job{ID: id, Kind: KindBreakGlass, PlanID: "bg-x", Project: "infra", Env: "prod", Pool: "prod",
			TTL: time.Hour, At: at})
		return b
	}
	var honestJob Job
	_ = json.Unmarshal([]byte(honest.Values["job"].(string)), &honestJob)
	for name, c := range map[string]struct {
		id  string
		put func(id string)
	}{
		"unsigned": {"j-unsigned", func(id string) { xadd(t, f.rdb, streamKey("t:", "prod"), nil, job(id, time.Now())) }},
		"untrusted key": {"j-rogue", func(id string) {
			xadd(t, f.rdb, streamKey("t:", "prod"), newSigner(t), job(id, time.Now()))
		}},
		"too old": {"j-old", func(id string) {
			xadd(t, f.rdb, streamKey("t:", "prod"), f.signer, job(id, time.Now().Add(-2*MaxJobAge)))
		}},
		"signed, then edited": {"j-edited", func(id string) {
			entry, _ := signJob(f.signer, job(id, time.Now()))
			entry["job"] = job(id, time.Now().Add(time.Second))
			f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: streamKey("t:", "prod"), Values: entry})
		}},
		"replayed": {honestJob.ID, func(string) {
			f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: streamKey("t:", "prod"), Values: honest.Values})
		}},
	} {
		t.Run(name, func(t *testing.T) {
			before := exec.minted.Load()
			c.put(c.id)
			for deadline := time.Now().Add(10 * time.Second); !refused(rec, c.id); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no refusal recorded")
				}
			}
			if exec.minted.Load() != before {
				t.Fatal("a break-glass token was minted for a forged job")
			}
		})
	}
}

// refused reports whether rec holds a forgery event about job id.
func refused(rec *recorder, id string) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.events {
		if e.Type == audit.Forgery && e.Detail["job"] == id && strings.Contains(e.Detail["error"], approvals.ErrForged.Error()) {
			return true
		}
	}
	return false
}
