package change

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Verifier verifies applies; *runner.Runner and a runner pool's client
// are ones. A Runner without it cannot verify, and says so.
type Verifier interface {
	Verify(ctx context.Context, job runner.VerifyJob) (runner.VerifyResult, error)
}

// ErrCannotVerify: the runner this service uses cannot verify applies.
var ErrCannotVerify = errors.New("this runner cannot verify applies")

// ErrVerificationLost: a verification whose replica stopped, with no result
// kept, long after it could have ended.
var ErrVerificationLost = errors.New("the twokey that was running it stopped, and no result of it was kept")

// Verifications remembers which applies' verifications are under way:
// one whose replica stopped waiting is reported by the sweeper, from the
// result a runner pool kept or, once it can no longer be running, as lost.
type Verifications interface {
	Started(ctx context.Context, planID string, at time.Time) error
	Ended(ctx context.Context, planID string) error
	// Underway lists the verifications started and not ended: when each
	// started, by plan ID.
	Underway(ctx context.Context) (map[string]time.Time, error)
}

// VerifyOutcomes finds the result of a verification that ended while
// nobody waited for it; a runner pool's client is one.
type VerifyOutcomes interface {
	VerifyOutcome(ctx context.Context, p approvals.Plan) (runner.VerifyResult, error, bool)
}

// verifyAfter starts the verification of a successful apply, where the
// environment has one: in the background, once across replicas, after
// "Apply complete" is posted and the environment is free. It holds no
// lock and delays nothing.
func (s *Service) verifyAfter(ctx context.Context, p approvals.Plan) {
	if p.Status != approvals.StatusApplied {
		return
	}
	proj, env, err := s.cfg.Resolve(p.Project, p.Env)
	if err != nil || env.Verify == nil {
		return
	}
	key := "verify:" + p.ID
	if first, err := s.o.Dedup.First(ctx, key, DedupTTL); err != nil || !first {
		return
	}
	if !s.Go(func(ctx context.Context) { s.verify(ctx, proj, env, p) }) {
		_ = s.o.Dedup.Forget(context.WithoutCancel(ctx), key)
		s.log.Warn("shutting down: the apply is not verified", "plan_id", p.ID)
	}
}

// verify runs an environment's verification of the applied plan p and
// reports it (verified). One whose runner goes on with nobody waiting is
// reported by the sweeper.
func (s *Service) verify(ctx context.Context, proj *config.Project, env *config.Environment, p approvals.Plan) {
	steps := stepsOf(env)
	s.post(ctx, p, fmt.Sprintf(":mag: Verifying the apply of `%s`: %s …", Short(p.SHA), StepsWords(steps)))
	if v := s.o.Verifications; v != nil {
		if err := v.Started(ctx, p.ID, s.o.Now()); err != nil {
			s.log.Warn("verification not remembered: a restart meanwhile loses it", "plan_id", p.ID, "err", err)
		}
	}
	res, err := s.runVerify(ctx, proj, p, steps)
	if errors.Is(err, runner.ErrDetached) {
		return // the sweeper reports it (sweepVerifications)
	}
	s.verified(ctx, proj, env, p, res, err)
}

// stepsOf is what env's verification does.
func stepsOf(env *config.Environment) runner.VerifySteps {
	return runner.VerifySteps{Converged: env.Verify.Converged, Smoke: env.Verify.Smoke, Timeout: env.Verify.SmokeTimeout()}
}

// verified reports how a verification went, once — by the replica that
// waited for it, or by a sweeper that found its result or gave it up:
// in the thread, in the record, on the plan's message and on GitHub; a
// failure also in the channel.
func (s *Service) verified(ctx context.Context, proj *config.Project, env *config.Environment, p approvals.Plan, res runner.VerifyResult, err error) {
	// Reported twice rather than not at all where Redis cannot say.
	if first, derr := s.o.Dedup.First(ctx, "verified:"+p.ID, DedupTTL); derr == nil && !first {
		return
	}
	if v := s.o.Verifications; v != nil {
		defer func() { _ = v.Ended(context.WithoutCancel(ctx), p.ID) }()
	}
	log := s.log.With("env", p.Project+"/"+p.Env, "plan_id", p.ID)
	steps := stepsOf(env)
	detail := map[string]string{"result": "passed", "steps": StepsWords(steps)}
	for _, st := range res.Steps {
		detail[st.Name], detail[st.Name+"_summary"] = stepResult(st), st.Summary
		detail[st.Name+"_duration"] = st.Duration.Round(time.Millisecond).String()
	}
	passed := err == nil && res.Passed()
	if !passed {
		detail["result"] = "failed"
	}
	if err != nil {
		detail["error"] = runner.Redact(err.Error())
		log.Warn("verification could not run", "err", err)
	} else {
		log.Info("verified", "result", detail["result"])
	}
	_ = s.record(ctx, audit.Verification, "", &p, detail)

	if passed {
		s.post(ctx, p, ":white_check_mark: *Verification passed*: "+ResultWords(res)+".")
		s.noteVerified(ctx, p, VerifiedWords+": "+stepNames(res))
		return
	}
	var why, text string
	if err != nil {
		why = "it could not run"
		text = fmt.Sprintf(":x: *Verification failed*: it could not run: %s", s.n.Describe(err))
	} else {
		why = failedWords(res)
		text = ":x: *Verification failed*: " + ResultWords(res) + "." + stepOutputs(res)
	}
	p = s.noteVerified(ctx, p, VerifyFailedWords+" ("+why+")")
	s.post(ctx, p, text)
	if err == nil {
		var full strings.Builder
		for _, st := range res.Steps {
			if !st.Passed && st.Output != "" {
				fmt.Fprintf(&full, "== %s: %s\n%s\n\n", st.Name, st.Summary, st.Output)
			}
		}
		s.attach(ctx, threadOf(p), "verify-"+env.Name+".txt", fmt.Sprintf("verification of %s at %s", env.Name, Short(p.SHA)), full.String())
	}
	if p.Channel != "" {
		link := ""
		if p.Permalink != "" {
			link = fmt.Sprintf(" <%s|See the thread.>", p.Permalink)
		}
		if nerr := s.n.Note(ctx, Thread{Channel: p.Channel}, fmt.Sprintf(":rotating_light: *%s*: %s (plan `%s`) was %s: %s.%s",
			s.scope(proj, env), Label(p), p.ID, VerifyFailedWords, why, link)); nerr != nil {
			log.Error("tell the channel a verification failed", "err", nerr)
		}
	}
}

// runVerify verifies the revision p applied, on its environment's pool.
func (s *Service) runVerify(ctx context.Context, proj *config.Project, p approvals.Plan, steps runner.VerifySteps) (runner.VerifyResult, error) {
	v, ok := s.o.Runner.(Verifier)
	if !ok {
		return runner.VerifyResult{}, ErrCannotVerify
	}
	target, err := s.o.Target(p.Project, p.Env)
	if err != nil {
		return runner.VerifyResult{}, err
	}
	rev, err := s.appliedRev(ctx, proj, p)
	if err != nil {
		return runner.VerifyResult{}, err
	}
	return v.Verify(ctx, runner.VerifyJob{ID: p.ID, Rev: rev, Target: target, Steps: steps})
}

// appliedRev is the revision p applied: its ref, while that still names
// the commit, or else the commit itself (a merged pull request's head).
func (s *Service) appliedRev(ctx context.Context, proj *config.Project, p approvals.Plan) (runner.Revision, error) {
	if rev, err := s.o.Runner.Resolve(ctx, proj.Repo, p.Ref); err == nil && rev.SHA == p.SHA {
		return rev, nil
	}
	rev, err := s.o.Runner.Resolve(ctx, proj.Repo, runner.Ref{})
	if err != nil {
		return runner.Revision{}, err
	}
	rev.SHA, rev.PR, rev.Ref = p.SHA, p.PR, runner.Ref{PR: p.PR, SHA: p.SHA}
	return rev, nil
}

// noteVerified adds how verification went to an applied plan's outcome,
// and shows it on its message (and, through Changed, on GitHub).
func (s *Service) noteVerified(ctx context.Context, p approvals.Plan, words string) approvals.Plan {
	next, err := s.mutate(ctx, p.ID, func(cur approvals.Plan) (approvals.Plan, error) {
		if cur.Status != approvals.StatusApplied || strings.Contains(cur.Reason, VerifiedWords) ||
			strings.HasPrefix(cur.Reason, VerifyFailedWords) {
			return cur, approvals.ErrUnchanged
		}
		if strings.HasPrefix(words, VerifyFailedWords) {
			cur.Reason = words + " · " + cur.Reason
		} else {
			cur.Reason += " · " + words
		}
		cur.UpdatedAt = s.o.Now()
		return cur, nil
	})
	if err != nil {
		s.log.Error("record the verification on the plan", "plan_id", p.ID, "err", err)
		return p
	}
	s.refresh(ctx, next)
	return next
}

// StepsWords says what a verification does.
func StepsWords(st runner.VerifySteps) string {
	var parts []string
	if st.Converged {
		parts = append(parts, "plan again, expecting no changes (converged)")
	}
	if st.Smoke != "" {
		parts = append(parts, fmt.Sprintf("run `%s` (smoke, timeout %s)", Escape(st.Smoke), Human(st.Timeout)))
	}
	return strings.Join(parts, ", then ")
}

// ResultWords says how each step went: "converged: no changes · smoke:
// exit status 1".
func ResultWords(r runner.VerifyResult) string {
	var parts []string
	for _, st := range r.Steps {
		mark := "✓"
		if !st.Passed {
			mark = "✗"
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", mark, st.Name, Escape(st.Summary)))
	}
	return strings.Join(parts, " · ")
}

func stepNames(r runner.VerifyResult) string {
	var names []string
	for _, st := range r.Steps {
		names = append(names, st.Name)
	}
	return strings.Join(names, ", ")
}

// failedWords names the steps that failed and why, briefly.
func failedWords(r runner.VerifyResult) string {
	var parts []string
	for _, st := range r.Steps {
		if !st.Passed {
			parts = append(parts, st.Name+": "+Escape(st.Summary))
		}
	}
	return strings.Join(parts, "; ")
}

// stepOutputs shows the failed steps' resources and the end of their
// output, for the thread.
func stepOutputs(r runner.VerifyResult) string {
	var b strings.Builder
	for _, st := range r.Steps {
		if st.Passed {
			continue
		}
		for i, a := range st.Resources {
			if i == 10 {
				fmt.Fprintf(&b, "\n• … and %d more", len(st.Resources)-i)
				break
			}
			fmt.Fprintf(&b, "\n• `%s`", a)
		}
		if st.Output != "" && st.Name != "converged" {
			out := st.Output
			if len(out) > 1200 {
				out = "…" + strings.ToValidUTF8(out[len(out)-1200:], "")
			}
			fmt.Fprintf(&b, "\n*%s* output:\n```%s```", st.Name, Escape(strings.ReplaceAll(out, "```", "'''")))
		}
	}
	return b.String()
}

func stepResult(st runner.StepResult) string {
	switch {
	case st.Passed:
		return "passed"
	case st.TimedOut:
		return "timed out"
	}
	return "failed"
}
