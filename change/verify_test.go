package change

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// verifyingRunner is a fakeRunner that verifies with a fixed result.
type verifyingRunner struct {
	*fakeRunner
	res  runner.VerifyResult
	err  error
	mu   sync.Mutex
	jobs []runner.VerifyJob
}

func (r *verifyingRunner) Verify(_ context.Context, job runner.VerifyJob) (runner.VerifyResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs = append(r.jobs, job)
	return r.res, r.err
}

// verifyNotes is a Notifier that keeps every note.
type verifyNotes struct {
	quiet
	mu    sync.Mutex
	lines []string // "thread-ts|text"; "" for the channel itself
}

func (n *verifyNotes) Note(_ context.Context, t Thread, text string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, t.TS+"|"+text)
	return nil
}

// wait waits for a note containing want and returns it.
func (n *verifyNotes) wait(t *testing.T, want string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		n.mu.Lock()
		for _, l := range n.lines {
			if strings.Contains(l, want) {
				n.mu.Unlock()
				return l
			}
		}
		n.mu.Unlock()
	}
	t.Fatalf("no note containing %q in %q", want, n.lines)
	return ""
}

// verifyHarness applies PR 1 in staging, which verifies with v, through
// run (nil: a runner that cannot verify).
func verifyHarness(t *testing.T, v *config.Verify, run *verifyingRunner) (*harness, *verifyNotes, approvals.Plan) {
	t.Helper()
	h, n := newVerifyHarness(t, v)
	if run != nil {
		run.fakeRunner = h.run
		h.svc.o.Runner = run
	}
	id := h.approvePR1(t)
	n.wait(t, "Apply complete")
	p, _ := h.store.Get(context.Background(), id)
	return h, n, p
}

// newVerifyHarness is a harness whose staging verifies with v, and whose
// notes n keeps.
func newVerifyHarness(t *testing.T, v *config.Verify) (*harness, *verifyNotes) {
	t.Helper()
	h := newHarness(t)
	h.svc.cfg.Projects[0].Environments[0].Verify = v
	h.dir.members[pGroup] = []string{pBob, pCarol}
	h.run.head = "0123456789abcdef0123456789abcdef01234567"
	n := &verifyNotes{}
	h.svc.n, h.svc.o.Notify = n, n
	return h, n
}

// approvePR1 plans PR 1 in staging and has bob and carol approve it; it
// returns the plan's ID.
func (h *harness) approvePR1(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	cmd, _ := commands.Parse("plan staging pr-1")
	if err := h.svc.Plan(ctx, pChannel, pAlice, cmd.(commands.Plan)); err != nil {
		t.Fatal(err)
	}
	id := h.openPlan(t)
	for _, u := range []string{pBob, pCarol} {
		if err := h.svc.Approve(ctx, pChannel, u, id); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// plan waits for the verification to reach the plan, and returns it.
func (h *harness) verifiedPlan(t *testing.T, id string) approvals.Plan {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if p, _ := h.store.Get(context.Background(), id); strings.Contains(p.Reason, VerifiedWords) || VerificationFailed(p) {
			return p
		}
	}
	t.Fatal("the plan never showed its verification")
	return approvals.Plan{}
}

func TestVerificationFailedIsShownEverywhere(t *testing.T) {
	run := &verifyingRunner{res: runner.VerifyResult{Steps: []runner.StepResult{
		{Name: "converged", Summary: "1 to replace", Resources: []string{"terraform_data.clock"}},
		{Name: "smoke", Passed: true, Summary: "exit status 0"},
	}}}
	h, n, p := verifyHarness(t, &config.Verify{Converged: true, Smoke: "./scripts/smoke.sh"}, run)
	n.wait(t, "Verifying the apply")
	failed := n.wait(t, "Verification failed")
	if !strings.Contains(failed, "terraform_data.clock") || !strings.Contains(failed, "✗ converged: 1 to replace") {
		t.Errorf("thread: %s", failed)
	}
	channel := n.wait(t, "|:rotating_light:") // no thread: the channel itself
	if !strings.Contains(channel, "was applied, verification failed: converged: 1 to replace") {
		t.Errorf("channel: %s", channel)
	}
	p = h.verifiedPlan(t, p.ID)
	if !VerificationFailed(p) || StatusHeadline(p) != "Applied, verification failed" || PlanIcon(p) != "⚠️" ||
		!strings.HasPrefix(Outcome(p), "Result: applied, verification failed (converged: 1 to replace) · 1 added") {
		t.Errorf("plan: status %s, outcome %q", p.Status, Outcome(p))
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if len(run.jobs) != 1 {
		t.Fatalf("%d verify jobs", len(run.jobs))
	}
	j := run.jobs[0]
	if j.ID != p.ID || j.Rev.SHA != p.SHA || j.Target.Env != "staging" || !j.Steps.Converged ||
		j.Steps.Smoke != "./scripts/smoke.sh" || j.Steps.Timeout != config.DefaultVerifyTimeout {
		t.Errorf("job %+v", j)
	}
	// Once per apply: a second report of the same apply verifies nothing.
	h.svc.verifyAfter(context.Background(), p)
	time.Sleep(50 * time.Millisecond)
	if len(run.jobs) != 1 {
		t.Errorf("verified again: %d jobs", len(run.jobs))
	}
}

func TestVerificationPassed(t *testing.T) {
	run := &verifyingRunner{res: runner.VerifyResult{Steps: []runner.StepResult{{Name: "converged", Passed: true, Summary: "no changes"}}}}
	h, n, p := verifyHarness(t, &config.Verify{Converged: true}, run)
	n.wait(t, "Verification passed")
	p = h.verifiedPlan(t, p.ID)
	if VerificationFailed(p) || !strings.HasSuffix(p.Reason, " · verified: converged") || StatusHeadline(p) != "Applied" {
		t.Errorf("plan reason %q", p.Reason)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.lines {
		if strings.HasPrefix(l, "|") {
			t.Errorf("a passed verification told the channel: %s", l)
		}
	}
}

// A verification that cannot run counts as failed: nobody knows the apply
// is good.
func TestVerificationThatCannotRunFails(t *testing.T) {
	h, n, p := verifyHarness(t, &config.Verify{Converged: true}, nil)
	if !strings.Contains(n.wait(t, "Verification failed"), ErrCannotVerify.Error()) {
		t.Error("the thread does not say why")
	}
	if p = h.verifiedPlan(t, p.ID); !VerificationFailed(p) {
		t.Errorf("reason %q", p.Reason)
	}

	run := &verifyingRunner{err: errors.New("vault down")}
	h, n, p = verifyHarness(t, &config.Verify{Converged: true}, run)
	n.wait(t, "vault down")
	n.wait(t, "|:rotating_light:")
	if p = h.verifiedPlan(t, p.ID); !strings.HasPrefix(p.Reason, VerifyFailedWords+" (it could not run)") {
		t.Errorf("reason %q", p.Reason)
	}
}

// Without verify: nothing is verified.
func TestNoVerification(t *testing.T) {
	run := &verifyingRunner{}
	_, n, _ := verifyHarness(t, nil, run)
	time.Sleep(50 * time.Millisecond)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.lines {
		if strings.Contains(l, "Verif") {
			t.Errorf("unexpected note: %s", l)
		}
	}
	if len(run.jobs) != 0 {
		t.Errorf("%d verify jobs", len(run.jobs))
	}
}

// memVerifications is Verifications in memory.
type memVerifications struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (v *memVerifications) Started(_ context.Context, id string, at time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]time.Time{}
	}
	v.m[id] = at
	return nil
}

func (v *memVerifications) Ended(_ context.Context, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, id)
	return nil
}

func (v *memVerifications) Underway(context.Context) (map[string]time.Time, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]time.Time{}
	for k, t := range v.m {
		out[k] = t
	}
	return out, nil
}

// detachedVerifier verifies on with nobody waiting (the replica that asked
// stopped), keeping the result for a sweeper, if kept.
type detachedVerifier struct {
	*fakeRunner
	res  runner.VerifyResult
	kept bool
}

func (d *detachedVerifier) Verify(context.Context, runner.VerifyJob) (runner.VerifyResult, error) {
	return runner.VerifyResult{}, runner.ErrDetached
}

func (d *detachedVerifier) PlanOutcome(context.Context, approvals.Plan) (runner.PlanResult, error, bool) {
	return runner.PlanResult{}, nil, false
}

func (d *detachedVerifier) ApplyOutcome(context.Context, approvals.Plan) (runner.ApplyResult, error, bool) {
	return runner.ApplyResult{}, nil, false
}

func (d *detachedVerifier) VerifyOutcome(context.Context, approvals.Plan) (runner.VerifyResult, error, bool) {
	return d.res, nil, d.kept
}

// detachedHarness applies PR 1 in staging, whose verification runs on with
// nobody waiting (d), and waits until it started.
func detachedHarness(t *testing.T, d *detachedVerifier) (*harness, *verifyNotes, *memVerifications, approvals.Plan) {
	t.Helper()
	h, n := newVerifyHarness(t, &config.Verify{Converged: true})
	v := &memVerifications{}
	d.fakeRunner = h.run
	h.svc.o.Runner, h.svc.o.Outcomes, h.svc.o.Verifications = d, d, v
	id := h.approvePR1(t)
	n.wait(t, "Verifying the apply")
	h.svc.Idle()
	p, _ := h.store.Get(context.Background(), id)
	return h, n, v, p
}

// count counts the notes containing want.
func (n *verifyNotes) count(want string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, l := range n.lines {
		if strings.Contains(l, want) {
			c++
		}
	}
	return c
}

// A verification whose replica stopped waiting (a restart) is reported by
// the sweeper, once, from the result the runner pool kept.
func TestDetachedVerificationIsReportedFromItsResult(t *testing.T) {
	d := &detachedVerifier{res: runner.VerifyResult{Steps: []runner.StepResult{{Name: "converged", Passed: true, Summary: "no changes"}}}}
	h, n, v, p := detachedHarness(t, d)
	ctx := context.Background()
	if under, _ := v.Underway(ctx); len(under) != 1 || n.count("Verification") != 0 {
		t.Fatalf("underway %v; notes %q", under, n.lines)
	}
	h.svc.Sweep(ctx) // no result yet
	if n.count("Verification passed") != 0 {
		t.Fatal("reported before its result")
	}
	d.kept = true
	h.svc.Sweep(ctx)
	h.svc.Sweep(ctx)
	if c := n.count("Verification passed"); c != 1 {
		t.Errorf("reported %d times", c)
	}
	if p = h.verifiedPlan(t, p.ID); !strings.Contains(p.Reason, VerifiedWords) {
		t.Errorf("reason %q", p.Reason)
	}
	if under, _ := v.Underway(ctx); len(under) != 0 {
		t.Errorf("still underway: %v", under)
	}
}

// One with no result kept (its replica died with it, or the result
// expired) is reported as failed once it can no longer be running, and
// the channel is told: nobody knows the apply is good.
func TestLostVerificationIsReportedOnceItCannotBeRunning(t *testing.T) {
	h, n, v, p := detachedHarness(t, &detachedVerifier{})
	ctx := context.Background()
	h.now = h.now.Add(config.DefaultPlanTimeout) // could still be running
	h.svc.Sweep(ctx)
	if n.count("Verification failed") != 0 {
		t.Fatal("given up while it could still be running")
	}
	h.now = h.now.Add(config.DefaultVerifyTimeout + verifyMargin)
	h.svc.Sweep(ctx)
	h.svc.Sweep(ctx)
	if c := n.count("Verification failed"); c != 1 || !strings.Contains(n.wait(t, "Verification failed"), "no result of it was kept") {
		t.Errorf("reported %d times: %q", c, n.lines)
	}
	n.wait(t, "|:rotating_light:")
	if p = h.verifiedPlan(t, p.ID); !VerificationFailed(p) {
		t.Errorf("reason %q", p.Reason)
	}
	if under, _ := v.Underway(ctx); len(under) != 0 {
		t.Errorf("still underway: %v", under)
	}
}
