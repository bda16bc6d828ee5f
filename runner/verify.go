package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/approvals"
)

// VerifySteps are what checks an environment after an apply.
type VerifySteps struct {
	// Converged plans the applied commit again: it must show no changes.
	Converged bool `json:"converged,omitempty"`
	// Smoke is a program of the repository, a path from its root, run in
	// the commit's checkout after init: it must exit 0 within Timeout.
	Smoke   string        `json:"smoke,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// VerifyJob verifies one apply: the applied revision, in a run of its own.
type VerifyJob struct {
	ID     string // the applied plan's ID; names the run's credential
	Rev    Revision
	Target Target
	Steps  VerifySteps
}

// VerifyResult is what each step found.
type VerifyResult struct {
	SHA   string       `json:"sha"`
	Steps []StepResult `json:"steps"`
}

// Passed reports whether every step passed.
func (v VerifyResult) Passed() bool {
	for _, s := range v.Steps {
		if !s.Passed {
			return false
		}
	}
	return true
}

// StepResult is one verification step's outcome.
type StepResult struct {
	Name   string `json:"name"` // converged, smoke
	Passed bool   `json:"passed"`
	// Summary says what happened in a few words: "no changes",
	// "1 to change", "exit status 1", "timed out after 5m0s".
	Summary string `json:"summary"`
	// TimedOut: the step was killed at its timeout.
	TimedOut bool `json:"timed_out,omitempty"`
	// Resources are what a plan that did not converge would change.
	Resources []string `json:"resources,omitempty"`
	// Output is what a smoke program printed, or the plan that did not
	// converge: redacted and cut to its last MaxStepOutput bytes.
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration"`
}

// MaxStepOutput is the most of a step's output a result keeps: its end.
const MaxStepOutput = 3000

// DefaultSmokeTimeout bounds a smoke program without a timeout.
const DefaultSmokeTimeout = 5 * time.Minute

// Commander is a Box that can run a program other than terraform in the
// run's sandbox, under the same rules.
type Commander interface {
	// Command is an executable that runs its arguments, a program and its
	// own arguments, in the box.
	Command() string
}

// Command runs its arguments as a plain child process.
func (unconfined) Command() string { return "" }

// ErrVerifySteps: a verification was asked for with nothing to check, or
// a smoke program outside the repository.
var ErrVerifySteps = errors.New("invalid verification steps")

// Verify checks an applied revision, in a run of its own: converged plans
// it again with the environment's read-only plan credentials (no state
// lock) and passes if nothing would change; smoke runs the repository's
// program in the same sandboxed checkout, after init, with the same
// environment terraform gets and no more, and passes if it exits 0 within
// its timeout. It takes no environment lock. An error means the steps
// could not run at all; a step that ran and failed is in the result.
func (r *Runner) Verify(ctx context.Context, job VerifyJob) (VerifyResult, error) {
	st := job.Steps
	if !st.Converged && st.Smoke == "" {
		return VerifyResult{}, fmt.Errorf("%w: nothing to check", ErrVerifySteps)
	}
	smoke := ""
	if st.Smoke != "" {
		smoke = filepath.Clean(strings.TrimPrefix(st.Smoke, "./"))
		if filepath.IsAbs(smoke) || smoke == "." || smoke == ".." || strings.HasPrefix(smoke, "../") {
			return VerifyResult{}, fmt.Errorf("%w: smoke %q is not a path inside the repository", ErrVerifySteps, st.Smoke)
		}
	}
	if st.Timeout <= 0 {
		st.Timeout = DefaultSmokeTimeout
	}
	t := job.Target
	ctx, cancel := context.WithTimeout(ctx, t.PlanTimeout+st.Timeout)
	defer cancel()
	about := subject{project: t.Project, env: t.Env, sha: job.Rev.SHA, planID: job.ID}
	var cred *Credential
	if t.PlanCreds != nil {
		req := *t.PlanCreds
		req.Purpose = "verify " + job.ID
		c, err := r.mint(ctx, req, about, 0)
		if err != nil {
			return VerifyResult{}, err
		}
		defer r.revokeRecorded(c, about)
		cred = c
	}
	ru, err := r.open(ctx, "verify", t)
	if err != nil {
		return VerifyResult{}, err
	}
	defer ru.close(r)
	if err := r.checkout(ctx, ru, job.Rev); err != nil {
		return VerifyResult{}, r.cause(ctx, err)
	}
	if err := r.materialize(ctx, ru, cred, nil); err != nil {
		return VerifyResult{}, r.cause(ctx, err)
	}
	res := VerifyResult{SHA: job.Rev.SHA}
	if st.Converged {
		step, err := r.converged(ctx, ru, cred)
		if err != nil {
			return VerifyResult{}, err
		}
		res.Steps = append(res.Steps, step)
	}
	if smoke != "" {
		step, err := r.smoke(ctx, ru, cred, smoke, st.Timeout)
		if err != nil {
			return VerifyResult{}, err
		}
		res.Steps = append(res.Steps, step)
	}
	return res, nil
}

// converged plans the run's checkout and passes if nothing would change.
func (r *Runner) converged(ctx context.Context, ru *run, cred *Credential) (StepResult, error) {
	start := time.Now()
	opts := []tfexec.PlanOption{tfexec.Out(ru.planOut), tfexec.Lock(false)}
	for _, vf := range ru.target.VarFiles {
		opts = append(opts, tfexec.VarFile(vf))
	}
	var changes bool
	if err := step(ctx, func() (err error) { changes, err = ru.tf.Plan(ru.ctx, opts...); return err }); err != nil {
		return StepResult{}, r.cause(ctx, tfError("plan", err, cred))
	}
	if !changes {
		return StepResult{Name: "converged", Passed: true, Summary: "no changes", Duration: time.Since(start)}, nil
	}
	data, err := readRunFile(ru.planOut)
	if err != nil {
		return StepResult{}, err
	}
	planFile, err := ru.box.Input("verify.tfplan", data)
	if err != nil {
		return StepResult{}, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	var (
		plan *tfjson.Plan
		text string
	)
	err = step(ctx, func() (err error) { plan, err = ru.tf.ShowPlanFile(ru.ctx, planFile); return err })
	if err == nil {
		err = step(ctx, func() (err error) { text, err = ru.tf.ShowPlanFileRaw(ru.ctx, planFile); return err })
	}
	if err != nil {
		return StepResult{}, r.cause(ctx, tfError("show", err, cred))
	}
	sum := Summarize(plan, changes)
	red := NewRedactor(append(cred.Values(), SensitiveValues(plan)...)...)
	out := StepResult{Name: "converged", Summary: summaryWords(sum), Output: tail(red.Redact(text), MaxStepOutput),
		Duration: time.Since(start)}
	for _, rc := range sum.Resources {
		out.Resources = append(out.Resources, rc.Address)
	}
	return out, nil
}

// summaryWords says what a plan that did not converge would do (a
// replacement is counted once, not as an add and a destroy).
func summaryWords(s approvals.Summary) string {
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{s.Add - s.Replace, "to add"}, {s.Change, "to change"}, {s.Replace, "to replace"}, {s.Destroy - s.Replace, "to destroy"},
		{s.Import, "to import"}, {s.Move, "to move"}, {s.Forget, "to forget"}, {s.Outputs, "outputs to change"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(parts) == 0 {
		return "changes"
	}
	return strings.Join(parts, ", ")
}

// smoke runs the repository's program in the run's box, from the root of
// the checkout, with the environment terraform gets and the run's names.
func (r *Runner) smoke(ctx context.Context, ru *run, cred *Credential, prog string, timeout time.Duration) (StepResult, error) {
	start := time.Now()
	path := filepath.Join(ru.src, prog)
	if st, err := os.Lstat(path); err != nil || !st.Mode().IsRegular() {
		return StepResult{Name: "smoke", Summary: fmt.Sprintf("%s is not a file in this commit", prog), Duration: time.Since(start)}, nil
	}
	env := r.env(ru, cred)
	env["TWOKEY_PROJECT"], env["TWOKEY_ENV"], env["TWOKEY_TF_DIR"] = ru.target.Project, ru.target.Env, ru.work
	var list []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		list = append(list, k+"="+env[k])
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cmd *exec.Cmd
	if c, ok := ru.box.(Commander); ok && c.Command() != "" {
		cmd = exec.CommandContext(sctx, c.Command(), path)
	} else if _, ok := ru.box.(unconfined); ok {
		cmd = exec.CommandContext(sctx, path)
	} else {
		return StepResult{}, fmt.Errorf("%w: this sandbox cannot run a smoke program", ErrSandbox)
	}
	out := &tailBuffer{max: 64 << 10}
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = ru.src, list, out, out
	// Its own process group, killed whole at the timeout; in a bwrap box
	// everything else dies with the sandbox's init.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := StepResult{Name: "smoke", Passed: err == nil, Summary: "exit status 0", Duration: time.Since(start)}
	switch {
	case err == nil:
	case errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		res.TimedOut, res.Summary = true, fmt.Sprintf("timed out after %s: killed", timeout)
	case ctx.Err() != nil:
		return StepResult{}, r.cause(ctx, err)
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			res.Summary = ee.ProcessState.String()
		} else {
			res.Summary = Redact(err.Error(), cred.Values()...)
		}
	}
	res.Output = tail(Redact(out.String(), cred.Values()...), MaxStepOutput)
	return res, nil
}

// tail keeps the last n bytes of s, at a line start where it can.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < n/4 {
		s = s[i+1:]
	}
	return "…\n" + strings.ToValidUTF8(s, "")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
