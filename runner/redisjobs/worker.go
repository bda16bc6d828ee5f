package redisjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// Executor runs plans, applies, drift checks and break-glass tokens;
// *runner.Runner is one.
type Executor interface {
	Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error)
	Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error)
	Drift(ctx context.Context, job runner.DriftJob) (runner.DriftResult, error)
	BreakGlass(ctx context.Context, job runner.BreakGlassJob) (runner.Wrapped, error)
	TokenAlive(ctx context.Context, project, env, accessor string) (bool, error)
	RevokeBreakGlass(ctx context.Context, project, env, grantID string, accessors ...string) error
}

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	Redis  redis.UniversalClient
	Prefix string
	Pool   string // the pool this worker serves
	Name   string // unique among the pool's workers
	Exec   Executor
	Store  approvals.Store
	// Notary verifies each apply's signed permit, and counts its signed
	// approvals again, before anything is minted. It needs only the public
	// keys of the serve processes.
	Notary *approvals.Notary
	// Signer signs every job result (see result.go); serve trusts no
	// result that a key under its signing.runner_keys did not sign.
	Signer *attest.Signer
	// Audit records refused forgeries (and nothing else: the runner records
	// its own work).
	Audit audit.Recorder
	// Target builds the target of an environment from this worker's own
	// configuration, and names the environment's pool.
	Target func(project, env string) (t runner.Target, pool string, err error)
	// Visibility: a job whose worker stops heartbeating for this long is
	// taken over by another worker of the pool. It must be shorter than the
	// environments' lock_ttl, so the taker finds the lease still alive.
	Visibility time.Duration
	// Grace: after Run's context ends, how long a running job may finish
	// before it is interrupted.
	Grace  time.Duration
	Logger *slog.Logger
}

// claimTTL is how long a claim on an apply is kept: far longer than any
// apply, so that a job taken over is never run again.
const claimTTL = 7 * 24 * time.Hour

// Worker takes its pool's jobs.
type Worker struct {
	o       WorkerOptions
	stream  string
	jobKeys attest.Keyring // serve's: every job must be signed by one of them
}

// NewWorker returns a Worker.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Redis == nil || o.Exec == nil || o.Store == nil || o.Notary == nil || o.Target == nil || o.Pool == "" || o.Name == "" {
		return nil, errors.New("redisjobs: Redis, Exec, Store, Notary, Target, Pool and Name are required")
	}
	if o.Signer == nil {
		return nil, errors.New("redisjobs: a worker needs a Signer: serve acts on no result a runner key did not sign")
	}
	if o.Visibility <= 0 {
		o.Visibility = 30 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{o: o, stream: streamKey(o.Prefix, o.Pool), jobKeys: attest.NewKeyring(o.Notary.PublicKeys()...)}, nil
}

// Run takes jobs until ctx ends, then lets the running job finish within
// Grace.
func (w *Worker) Run(ctx context.Context) error {
	err := w.o.Redis.XGroupCreateMkStream(ctx, w.stream, group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group on %s: %w", w.stream, err)
	}
	w.o.Logger.Info("runner taking jobs", "pool", w.o.Pool, "worker", w.o.Name)
	for ctx.Err() == nil {
		msg, ok, err := w.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.o.Logger.Warn("read jobs", "err", err)
			select { // Redis is down: try again in a second, or stop
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if ok {
			w.handle(ctx, msg)
		}
	}
	return nil
}

// next takes over a job whose worker died, or else waits for a new one.
func (w *Worker) next(ctx context.Context) (redis.XMessage, bool, error) {
	claimed, _, err := w.o.Redis.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: w.stream, Group: group,
		Consumer: w.o.Name, MinIdle: w.o.Visibility, Start: "0-0", Count: 1}).Result()
	if err != nil {
		return redis.XMessage{}, false, err
	}
	if len(claimed) > 0 {
		w.o.Logger.Warn("took over a job whose worker stopped", "id", claimed[0].ID)
		return claimed[0], true, nil
	}
	streams, err := w.o.Redis.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: w.o.Name,
		Streams: []string{w.stream, ">"}, Count: 1, Block: min(2*time.Second, w.o.Visibility/2)}).Result()
	if errors.Is(err, redis.Nil) {
		return redis.XMessage{}, false, nil
	}
	if err != nil {
		return redis.XMessage{}, false, err
	}
	for _, s := range streams {
		if len(s.Messages) > 0 {
			return s.Messages[0], true, nil
		}
	}
	return redis.XMessage{}, false, nil
}

// handle runs one job and acknowledges it.
func (w *Worker) handle(ctx context.Context, msg redis.XMessage) {
	var j Job
	raw, _ := msg.Values["job"].(string)
	if err := json.Unmarshal([]byte(raw), &j); err != nil || j.ID == "" {
		w.o.Logger.Error("drop malformed job", "id", msg.ID, "err", err)
		w.ack(msg.ID)
		return
	}
	log := w.o.Logger.With("job", j.ID, "plan_id", j.PlanID, "env", j.Project+"/"+j.Env, "kind", string(j.Kind))
	if err := w.verifyJob(ctx, msg, raw, j); err != nil {
		w.refuse(ctx, j, 0, "job refused", err, log)
		if !errors.Is(err, approvals.ErrForged) {
			return // Redis trouble: leave the job for a retry
		}
		// The refusal goes on the job's event stream unsigned, and is not
		// kept: no replica waits for a job serve did not sign (or already
		// had run), and a signed refusal would let a writer put a signed
		// result under any job or plan it names. serve acts on no
		// unsigned result.
		w.emit(j.ID, event{Type: "result", Err: encodeError(err)})
		w.ack(msg.ID)
		return
	}
	target, pool, err := w.o.Target(j.Project, j.Env)
	if err == nil && pool != w.o.Pool {
		err = fmt.Errorf("%w: %s/%s belongs to pool %q; this runner serves %q only", ErrWrongPool, j.Project, j.Env, pool, w.o.Pool)
	}
	if err != nil {
		log.Warn("refused job", "err", err)
		w.finish(j, event{Type: "result", Err: encodeError(err)})
		w.ack(msg.ID)
		return
	}
	w.emit(j.ID, event{Type: "picked"})

	// The job runs on past ctx for Grace, so a running apply is interrupted
	// (SIGINT) only if it does not finish in time.
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(w.o.Grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-work.Done():
		}
	})
	defer stop()
	defer w.heartbeat(work, msg.ID)()

	var ev event
	switch j.Kind {
	case KindPlan:
		ev = w.plan(work, j, target)
	case KindApply:
		ev = w.apply(work, j, target, log)
	case KindDrift:
		res, err := w.o.Exec.Drift(work, runner.DriftJob{ID: j.PlanID, Rev: j.Rev, Target: target})
		ev = event{Type: "result", Err: encodeError(err)}
		if err == nil {
			ev.Drift = &res
		}
	case KindVerify:
		ev = w.verify(work, j, target)
	case KindBreakGlass:
		// Nothing is minted for a job whose token could not be sealed.
		if _, err := sealWrapped(j.Recipient, runner.Wrapped{}); err != nil {
			ev = event{Type: "result", Err: encodeError(err)}
			break
		}
		wrapped, err := w.o.Exec.BreakGlass(work, runner.BreakGlassJob{GrantID: j.PlanID, TTL: j.TTL, Target: target})
		ev = event{Type: "result", Err: encodeError(err)}
		if err == nil {
			ev.SealedWrapped, err = sealWrapped(j.Recipient, wrapped)
			if err != nil {
				ev = event{Type: "result", Err: encodeError(err)}
			}
		}
	case KindTokenAlive:
		ev = event{Type: "result", Err: encodeError(errors.New("token lookup job without an accessor"))}
		if len(j.Accessors) == 1 {
			alive, err := w.o.Exec.TokenAlive(work, j.Project, j.Env, j.Accessors[0])
			ev = event{Type: "result", Alive: &alive, Err: encodeError(err)}
		}
	case KindRevoke:
		ev = event{Type: "result", Err: encodeError(w.o.Exec.RevokeBreakGlass(work, j.Project, j.Env, j.PlanID, j.Accessors...))}
	default:
		ev = event{Type: "result", Err: encodeError(fmt.Errorf("unknown job kind %q", j.Kind))}
	}
	if ev.Err != nil {
		log.Warn("job failed", "err", ev.Err.Msg)
	} else {
		log.Info("job done")
	}
	w.finish(j, ev)
	w.ack(msg.ID)
}

// Verifier verifies applies; *runner.Runner is one.
type Verifier interface {
	Verify(ctx context.Context, job runner.VerifyJob) (runner.VerifyResult, error)
}

func (w *Worker) verify(ctx context.Context, j Job, target runner.Target) event {
	v, ok := w.o.Exec.(Verifier)
	if !ok || j.Verify == nil {
		return event{Type: "result", Err: encodeError(errors.New("this runner cannot verify, or the job has no steps"))}
	}
	res, err := v.Verify(ctx, runner.VerifyJob{ID: j.PlanID, Rev: j.Rev, Target: target, Steps: *j.Verify})
	if err != nil {
		return event{Type: "result", Err: encodeError(err)}
	}
	return event{Type: "result", Verify: &res}
}

func (w *Worker) plan(ctx context.Context, j Job, target runner.Target) event {
	p, err := w.o.Store.Get(ctx, j.PlanID)
	if err == nil && (p.Status != approvals.StatusPlanning || p.Fence != j.Lease.Fence) {
		err = fmt.Errorf("%w: plan %s is %s", ErrStaleJob, p.ID, p.Status)
	}
	if err != nil {
		return event{Type: "result", Err: encodeError(err)}
	}
	res, err := w.o.Exec.Plan(ctx, runner.PlanJob{PlanID: j.PlanID, Rev: j.Rev, Lease: j.Lease, Target: target,
		Preview: func(s approvals.Summary) { w.emit(j.ID, event{Type: "preview", Preview: &s}) }})
	if err != nil {
		return event{Type: "result", Err: encodeError(err)}
	}
	return event{Type: "result", Plan: &res}
}

// apply verifies the plan's signed permit and its approvals, claims the
// apply — so that a job taken over after this worker died is never applied
// twice — and applies it with the Permit built from what was signed. A plan
// whose permit does not verify is refused, loudly. The worker only reads the
// plan; its claim is a key of its own pool.
func (w *Worker) apply(ctx context.Context, j Job, target runner.Target, log *slog.Logger) event {
	var g approvals.Permit
	p, err := w.o.Store.Get(ctx, j.PlanID)
	if err == nil {
		g, err = w.o.Notary.PermitOf(p)
	}
	if err == nil {
		err = g.Check(time.Now())
	}
	if err == nil && (g.Project() != j.Project || g.Env() != j.Env || g.SHA() != j.Rev.SHA) {
		err = fmt.Errorf("%w: the job names %s/%s at %s, the permit %s/%s at %s", approvals.ErrForged,
			j.Project, j.Env, j.Rev.SHA, g.Project(), g.Env(), g.SHA())
	}
	if errors.Is(err, approvals.ErrForged) || errors.Is(err, approvals.ErrPermitExpired) {
		w.refuse(ctx, j, p.PR, "apply job refused", err, log)
		return event{Type: "result", Err: encodeError(err)}
	}
	if err != nil {
		return event{Type: "result", Err: encodeError(err)}
	}
	if j.Permit != g.Tag() {
		// A job for another attempt's permit: the plan moved on (an apply
		// that could not start was retried), or this is a replay.
		return event{Type: "result", Err: encodeError(fmt.Errorf("%w: the job is for permit %q, the plan carries %q",
			runner.ErrStalePlan, j.Permit, g.Tag()))}
	}
	claimed, err := w.o.Redis.SetNX(ctx, claimKey(w.o.Prefix, w.o.Pool, j.PlanID, j.Permit), w.o.Name, claimTTL).Result()
	if err != nil {
		return event{Type: "result", Err: encodeError(fmt.Errorf("claim the apply: %w", err))}
	}
	if !claimed {
		executor, _ := w.o.Redis.Get(ctx, claimKey(w.o.Prefix, w.o.Pool, j.PlanID, j.Permit)).Result()
		reason := fmt.Sprintf("runner %s stopped during this apply; it is never run twice. Check the environment, then plan again.", executor)
		log.Error("apply job taken over after its runner stopped: not re-run", "executor", executor)
		return event{Type: "result", Err: encodeError(fmt.Errorf("%w: %w: %s", runner.ErrInterrupted, approvals.ErrClaimed, reason))}
	}
	res, err := w.o.Exec.Apply(ctx, runner.ApplyJob{Permit: g, Rev: j.Rev, Target: target,
		Progress: func(line string) { w.emit(j.ID, event{Type: "progress", Line: line}) }})
	return event{Type: "result", Apply: toWire(res), Err: encodeError(err)}
}

// refuse records a job, or an apply, that no trusted signature backs.
func (w *Worker) refuse(ctx context.Context, j Job, pr int, what string, err error, log *slog.Logger) {
	log.Error("refused a job without a valid signature: nothing run, minted or applied", "what", what, "err", err)
	if w.o.Audit == nil {
		return
	}
	rerr := w.o.Audit.Record(context.WithoutCancel(ctx), audit.Event{Type: audit.Forgery,
		Actor: audit.Actor{ID: "twokey", Name: w.o.Name}, Project: j.Project, Env: j.Env, PR: pr, SHA: j.Rev.SHA,
		PlanID: j.PlanID, Detail: map[string]string{"what": what, "kind": string(j.Kind), "by": w.o.Name, "pool": w.o.Pool,
			"job": j.ID, "error": err.Error()}})
	if rerr != nil {
		log.Error("audit record of a refused forgery not written", "err", rerr)
	}
}

// heartbeat keeps the job's idle time low while it runs, so no other
// worker takes it over; it returns the function that stops it.
func (w *Worker) heartbeat(ctx context.Context, id string) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(w.o.Visibility / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.o.Redis.XClaimJustID(ctx, &redis.XClaimArgs{Stream: w.stream, Group: group, Consumer: w.o.Name, Messages: []string{id}})
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

func (w *Worker) emit(id string, ev event) {
	ev.Worker, ev.At = w.o.Name, time.Now().UTC()
	b, _ := json.Marshal(ev)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := eventsKey(w.o.Prefix, w.o.Pool, id)
	pipe := w.o.Redis.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: map[string]any{"event": b}})
	pipe.Expire(ctx, key, resultTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		w.o.Logger.Error("report job event", "job", id, "type", ev.Type, "err", err)
	}
}

// finish signs the result and reports it, and keeps a plan's, apply's or
// verification's for replicas that were not waiting.
func (w *Worker) finish(j Job, ev event) {
	ev.Type, ev.Worker, ev.At = "result", w.o.Name, time.Now().UTC()
	b, err := signResult(w.o.Signer, j, w.o.Pool, ev)
	if err != nil {
		w.o.Logger.Error("sign job result: not reported", "job", j.ID, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := eventsKey(w.o.Prefix, w.o.Pool, j.ID)
	pipe := w.o.Redis.Pipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: map[string]any{"event": b}})
	pipe.Expire(ctx, key, resultTTL)
	if j.Kind == KindPlan || j.Kind == KindApply || j.Kind == KindVerify {
		pipe.Set(ctx, outcomeKey(w.o.Prefix, w.o.Pool, j.PlanID, j.Kind, j.Permit), b, resultTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		w.o.Logger.Error("report job result", "job", j.ID, "err", err)
	}
}

func (w *Worker) ack(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.o.Redis.XAck(ctx, w.stream, group, id).Err(); err != nil {
		w.o.Logger.Error("acknowledge job", "id", id, "err", err)
	}
}
