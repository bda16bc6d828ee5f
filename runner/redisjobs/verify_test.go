package redisjobs

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

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
