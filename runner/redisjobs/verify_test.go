package redisjobs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// verifyExec is a fakeExec that verifies.
type verifyExec struct {
	*fakeExec
	mu   sync.Mutex
	jobs []runner.VerifyJob
}

func (v *verifyExec) Verify(_ context.Context, job runner.VerifyJob) (runner.VerifyResult, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.jobs = append(v.jobs, job)
	return runner.VerifyResult{SHA: job.Rev.SHA, Steps: []runner.StepResult{{Name: "smoke", Summary: "exit status 1", Output: "503"}}}, nil
}

// A verification travels to the environment's pool with its steps, signed
// like every job, and its result comes back; a worker whose executor
// cannot verify says so.
func TestVerifyOnPool(t *testing.T) {
	f := setup(t)
	exec := &verifyExec{fakeExec: &fakeExec{}}
	f.worker(t, "prod", "w-prod", exec, 30*time.Second)
	ctx := context.Background()
	steps := runner.VerifySteps{Converged: true, Smoke: "./scripts/smoke.sh", Timeout: time.Minute}
	res, err := f.client.Verify(ctx, runner.VerifyJob{ID: "p-1", Rev: runner.Revision{SHA: "abc"},
		Target: runner.Target{Project: "infra", Env: "prod"}, Steps: steps})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA != "abc" || res.Passed() || res.Steps[0].Output != "503" {
		t.Fatalf("result %+v", res)
	}
	exec.mu.Lock()
	if len(exec.jobs) != 1 || exec.jobs[0].Steps != steps || exec.jobs[0].ID != "p-1" || exec.jobs[0].Target.Env != "prod" {
		t.Errorf("jobs %+v", exec.jobs)
	}
	exec.mu.Unlock()

	f.worker(t, "nonprod", "w-nonprod", &fakeExec{}, 30*time.Second)
	_, err = f.client.Verify(ctx, runner.VerifyJob{ID: "p-2", Rev: runner.Revision{SHA: "abc"},
		Target: runner.Target{Project: "infra", Env: "dev"}, Steps: steps})
	if err == nil || !strings.Contains(err.Error(), "cannot verify") {
		t.Fatalf("a worker that cannot verify: %v", err)
	}
}

// blockingVerifier is a fakeExec whose verifications pass once block
// closes.
type blockingVerifier struct {
	*fakeExec
	started atomic.Int32
	block   chan struct{}
}

func (b *blockingVerifier) Verify(ctx context.Context, job runner.VerifyJob) (runner.VerifyResult, error) {
	b.started.Add(1)
	select {
	case <-b.block:
	case <-ctx.Done():
		return runner.VerifyResult{}, ctx.Err()
	}
	return runner.VerifyResult{Steps: []runner.StepResult{{Name: "converged", Passed: true, Summary: "no changes in " + job.ID}}}, nil
}

// A verification's result is kept too, for a replica that was not
// waiting for it (change's sweeper), and only once a runner signed it.
func TestDetachedVerificationResultIsKept(t *testing.T) {
	f := setup(t)
	slow := &blockingVerifier{fakeExec: &fakeExec{}, block: make(chan struct{})}
	f.worker(t, "nonprod", "w1", slow, time.Second)
	p := approvals.Plan{ID: "p-verified", Project: "infra", Env: "dev"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Verify(ctx, runner.VerifyJob{ID: p.ID, Target: runner.Target{Project: "infra", Env: "dev"},
			Steps: runner.VerifySteps{Converged: true}})
		done <- err
	}()
	for slow.started.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("err = %v, want ErrDetached", err)
	}
	if _, _, ok := f.client.VerifyOutcome(context.Background(), p); ok {
		t.Fatal("an outcome before the verification ended")
	}
	close(slow.block)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if res, verr, ok := f.client.VerifyOutcome(context.Background(), p); ok {
			if verr != nil || !res.Passed() || res.Steps[0].Summary != "no changes in p-verified" {
				t.Fatalf("outcome = %+v %v", res, verr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome kept")
		}
	}
	// Another plan's kept result is not this one's.
	if _, _, ok := f.client.VerifyOutcome(context.Background(), approvals.Plan{ID: "p-other", Project: "infra", Env: "dev"}); ok {
		t.Error("an outcome for a plan never verified")
	}
}
