package redisjobs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// denyingExec plans like fakeExec, with what a Redis writer would want
// gone: a policy denial, a raised quorum, a required group, destroys.
type denyingExec struct{ *fakeExec }

func (d denyingExec) Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	res, err := d.fakeExec.Plan(ctx, job)
	res.Policy = approvals.Assessment{Checked: true, Required: 3,
		Denied: []approvals.Finding{{Rule: "twokey.iam.deny", Message: "IAM * granted"}},
		Groups: []approvals.GroupRequirement{{Group: "security"}}}
	res.Summary = approvals.Summary{Destroy: 5}
	return res, err
}

// denied reports whether res is the denying plan's real result.
func denied(res runner.PlanResult) bool {
	return len(res.Policy.Denied) == 1 && res.Policy.Required == 3 && len(res.Policy.Groups) == 1 && res.Summary.Destroy == 5
}

// forgeries counts the forgery events rec holds about plan id.
func forgeries(rec *recorder, id string) int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, e := range rec.events {
		if e.Type == audit.Forgery && e.PlanID == id {
			n++
		}
	}
	return n
}

// A Redis writer (no key) edits the result of a plan job — the one kept
// for a sweeping replica after the dispatching replica stopped waiting, or
// the one on the job's event stream a replica waits on — to take out the
// policy denial, the raised quorum, the required group and the destroys.
// Every result is signed by the worker for its job, plan, kind, pool and
// fence: serve reads a kept result that does not verify as no result at all
// (the plan then fails closed) and ignores one on the stream, waiting for
// the signed one; each is logged and recorded as a forgery.
func TestForgedPlanResultIsRefused(t *testing.T) {
	f := setup(t)
	rec := &recorder{}
	f.client.o.Audit = rec
	slow := &fakeExec{block: make(chan struct{})}
	f.worker(t, "nonprod", "w1", denyingExec{slow}, time.Second)
	f.plan(t, "p-forge", "dev", approvals.StatusPlanning)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		_, err = f.client.Plan(ctx, runner.PlanJob{PlanID: "p-forge", Lease: runner.Lease{Fence: 1},
			Target: runner.Target{Project: "infra", Env: "dev"}})
	})
	for slow.plans.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // the replica that dispatched it stops (deploy, crash)
	wg.Wait()
	if !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("err = %v, want ErrDetached", err)
	}
	close(slow.block)
	key := outcomeKey("t:", "nonprod", "p-forge", KindPlan, "")
	var honest []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if honest, err = f.rdb.Get(context.Background(), key).Bytes(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome kept")
		}
	}
	p := approvals.Plan{ID: "p-forge", Project: "infra", Env: "dev", Fence: 1}
	if res, perr, ok := f.client.PlanOutcome(context.Background(), p); !ok || perr != nil || !denied(res) {
		t.Fatalf("honest outcome: %+v %v %v", res, perr, ok)
	}

	// What the writer wants serve to seal: same digest, nothing in the way.
	var sr signedResult
	var st resultStatement
	var ev event
	if json.Unmarshal(honest, &sr) != nil || json.Unmarshal(sr.Statement, &st) != nil || json.Unmarshal(st.Event, &ev) != nil {
		t.Fatalf("kept result: %s", honest)
	}
	ev.Plan.Policy, ev.Plan.Summary = approvals.Assessment{}, approvals.Summary{Add: 1}
	benign, _ := json.Marshal(ev)
	benignPlan := Job{ID: st.Job, Kind: KindPlan, PlanID: "p-forge", Pool: "nonprod", Lease: runner.Lease{Fence: 1}}
	mustSign := func(j Job) []byte {
		b, err := signResult(f.runner, j, "nonprod", ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, forged := range map[string]func() []byte{
		"unsigned, as before": func() []byte { return benign },
		"signed statement edited": func() []byte {
			st2 := st
			st2.Event = benign
			sr2 := sr
			sr2.Statement, _ = json.Marshal(st2)
			b, _ := json.Marshal(sr2)
			return b
		},
		"signed by a key of the writer's": func() []byte {
			b, err := signResult(newSigner(t), benignPlan, "nonprod", ev)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		"another plan's signed result": func() []byte {
			j := benignPlan
			j.PlanID, j.ID = "p-other", "p-other:plan:x"
			return mustSign(j)
		},
		"an earlier fence's signed result": func() []byte {
			j := benignPlan
			j.Lease.Fence = 0
			return mustSign(j)
		},
		"another pool's signed result": func() []byte {
			b, err := signResult(f.runner, benignPlan, "prod", ev)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		"the apply's signed result": func() []byte {
			j := benignPlan
			j.Kind = KindApply
			return mustSign(j)
		},
	} {
		t.Run(name, func(t *testing.T) {
			before := forgeries(rec, "p-forge")
			if err := f.rdb.Set(context.Background(), key, forged(), time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			for range 3 { // sweeps every 5 s: each refuses it, it is recorded once
				if res, perr, ok := f.client.PlanOutcome(context.Background(), p); ok {
					t.Fatalf("forged kept result accepted: policy %+v summary %+v err %v", res.Policy, res.Summary, perr)
				}
			}
			if n := forgeries(rec, "p-forge") - before; n != 1 {
				t.Fatalf("%d forgery events recorded, want 1", n)
			}
		})
	}
	// The honest result, put back, still counts.
	f.rdb.Set(context.Background(), key, honest, time.Hour)
	if res, perr, ok := f.client.PlanOutcome(context.Background(), p); !ok || perr != nil || !denied(res) {
		t.Fatalf("honest outcome: %+v %v %v", res, perr, ok)
	}

}

// On the job's event stream, forged results reach the waiting replica
// before the worker's own: it ignores and records each, and returns the
// worker's.
func TestForgedStreamResultIsIgnored(t *testing.T) {
	f := setup(t)
	rec := &recorder{}
	f.client.o.Audit = rec
	slow2 := &fakeExec{block: make(chan struct{})}
	f.worker(t, "nonprod", "w2", denyingExec{slow2}, time.Second)
	f.plan(t, "p-stream", "dev", approvals.StatusPlanning)
	var (
		wg  sync.WaitGroup
		res runner.PlanResult
		err error
	)
	wg.Go(func() {
		res, err = f.client.Plan(context.Background(), runner.PlanJob{PlanID: "p-stream", Lease: runner.Lease{Fence: 1},
			Target: runner.Target{Project: "infra", Env: "dev"}})
	})
	for slow2.plans.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	var jobID string
	for _, m := range f.rdb.XRange(context.Background(), streamKey("t:", "nonprod"), "-", "+").Val() {
		var j Job
		if json.Unmarshal([]byte(m.Values["job"].(string)), &j) == nil && j.PlanID == "p-stream" {
			jobID = j.ID
		}
	}
	forgedJob := Job{ID: jobID, Kind: KindPlan, PlanID: "p-stream", Pool: "nonprod", Lease: runner.Lease{Fence: 1}}
	ev := event{Type: "result", Plan: &runner.PlanResult{Digest: "digest-p-stream", Summary: approvals.Summary{Add: 1}}}
	benign, _ := json.Marshal(ev)
	mustSign := func(j Job) []byte {
		b, err := signResult(f.runner, j, "nonprod", ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rogue, _ := signResult(newSigner(t), forgedJob, "nonprod", ev)
	otherFence := forgedJob
	otherFence.Lease.Fence = 2
	for _, values := range []map[string]any{
		{"event": benign},
		{"event": rogue},
		{"event": mustSign(otherFence)},
	} {
		if err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: eventsKey("t:", "nonprod", jobID), Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); forgeries(rec, "p-stream") < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("forged stream results not all recorded: %d", forgeries(rec, "p-stream"))
		}
	}
	close(slow2.block)
	wg.Wait()
	if err != nil || !denied(res) {
		t.Fatalf("waiting replica got %+v %v, want the worker's own (denied) result", res, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if last := rec.events[len(rec.events)-1]; !strings.Contains(last.Detail["error"], approvals.ErrForged.Error()) {
		t.Fatalf("forgery event: %+v", last)
	}
}

// A worker without a signing key is refused: serve would trust none of its
// results.
func TestWorkerNeedsSigner(t *testing.T) {
	f := setup(t)
	_, err := NewWorker(WorkerOptions{Redis: f.rdb, Prefix: "t:", Pool: "nonprod", Name: "w", Exec: &fakeExec{}, Store: f.store,
		Notary: f.verifier(), Target: func(string, string) (runner.Target, string, error) { return runner.Target{}, "nonprod", nil }})
	if err == nil {
		t.Fatal("a worker without a signing key was made")
	}
}
