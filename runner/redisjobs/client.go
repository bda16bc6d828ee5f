// Package redisjobs runs plans and applies on runner pools over Redis
// Streams. `twokey serve` dispatches each job onto its pool's stream; the
// pool's workers (`twokey runner --pool <name>`) take jobs in a consumer
// group, heartbeat them while they run, and report progress and the result
// on the job's own stream, which any serve replica can read. Only a pool's
// workers hold that pool's Vault login.
package redisjobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// group is the consumer group of every pool's workers.
const group = "runners"

// resultTTL is how long a job's events and result are kept after it ends,
// for a serve replica that was not waiting when it did.
const resultTTL = time.Hour

// Every key a pool's workers write names the pool, so that a Redis ACL user
// per pool can be limited to its own keys (deploy/redis/users.acl): the
// stream it reads, its jobs' events and results, and its claims.
func streamKey(prefix, pool string) string     { return prefix + "jobs:{" + pool + "}" }
func eventsKey(prefix, pool, id string) string { return prefix + "job:" + pool + ":{" + id + "}" }
func outcomeKey(prefix, pool, planID string, k Kind, permit string) string {
	key := prefix + "jobresult:" + pool + ":{" + planID + "}:" + string(k)
	if permit != "" {
		key += ":" + permit
	}
	return key
}

// claimKey holds the name of the worker that started a plan's apply with
// one permit (approvals.Permit.Tag).
func claimKey(prefix, pool, planID, permit string) string {
	return prefix + "claim:" + pool + ":{" + planID + "}:" + permit
}

// ClientOptions configure a Client.
type ClientOptions struct {
	Redis  redis.UniversalClient
	Prefix string
	// Pool names the pool of an environment.
	Pool func(project, env string) (string, error)
	// Source resolves refs (serve needs no runner for that).
	Source runner.Source
	// Plans holds saved plans, for Discard.
	Plans runner.PlanStore
	// Signer signs every job; workers refuse unsigned ones.
	Signer *attest.Signer
	// Runners are the workers' public keys (signing.runner_keys): a job's
	// result, on its event stream or kept for a sweeping replica, counts
	// only if one of them signed it for that job. With none, no result
	// counts and every job fails closed.
	Runners attest.Keyring
	// Audit records results that do not verify, as forgeries.
	Audit audit.Recorder
	// PickupTimeout: a job no worker takes within this fails. Default 1m.
	PickupTimeout time.Duration
	Logger        *slog.Logger
}

// Client dispatches jobs and waits for their results; it is the bot's
// Runner when serve does not run plans itself.
type Client struct {
	o        ClientOptions
	reported sync.Map // forged kept results already recorded, so a sweep every 5 s records each once
}

// NewClient returns a Client.
func NewClient(o ClientOptions) *Client {
	if o.PickupTimeout <= 0 {
		o.PickupTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Runners.Len() == 0 {
		o.Logger.Error("redisjobs: no runner keys are trusted, so no job result will be accepted: every plan and apply fails")
	}
	return &Client{o: o}
}

// Resolve resolves a ref through the Source.
func (c *Client) Resolve(ctx context.Context, repo string, ref runner.Ref) (runner.Revision, error) {
	return c.o.Source.Resolve(ctx, repo, ref)
}

// Discard deletes a saved plan.
func (c *Client) Discard(ctx context.Context, planID string) error {
	return c.o.Plans.Delete(ctx, planID)
}

// Plan runs a plan on its environment's pool.
func (c *Client) Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error) {
	ev, err := c.run(ctx, Job{Kind: KindPlan, PlanID: job.PlanID, Project: job.Target.Project, Env: job.Target.Env,
		Rev: job.Rev, Lease: job.Lease}, nil, job.Preview)
	if err != nil {
		return runner.PlanResult{}, err
	}
	if ev.Plan == nil {
		return runner.PlanResult{}, errors.New("plan job ended without a result")
	}
	return *ev.Plan, nil
}

// Apply runs an apply on its environment's pool. The worker builds the
// Grant again from the plan in the store.
func (c *Client) Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error) {
	g := job.Permit
	ev, err := c.run(ctx, Job{Kind: KindApply, PlanID: g.PlanID(), Project: g.Project(), Env: g.Env(), Rev: job.Rev,
		Permit: g.Tag()}, job.Progress, nil)
	if err != nil {
		return ev.Apply.result(), err
	}
	return ev.Apply.result(), nil
}

// BreakGlass mints a grant's wrapped token on its environment's pool.
func (c *Client) BreakGlass(ctx context.Context, job runner.BreakGlassJob) (runner.Wrapped, error) {
	recipient, err := newRecipient()
	if err != nil {
		return runner.Wrapped{}, err
	}
	ev, err := c.run(ctx, Job{Kind: KindBreakGlass, PlanID: job.GrantID, Project: job.Target.Project, Env: job.Target.Env,
		TTL: job.TTL, Recipient: recipient.PublicKey().Bytes()}, nil, nil)
	if err != nil {
		return runner.Wrapped{}, err
	}
	if ev.SealedWrapped == nil {
		return runner.Wrapped{}, errors.New("break-glass job ended without a token")
	}
	return openWrapped(recipient, ev.SealedWrapped)
}

// TokenAlive asks the environment's pool whether a token still exists.
func (c *Client) TokenAlive(ctx context.Context, project, env, accessor string) (bool, error) {
	ev, err := c.run(ctx, Job{Kind: KindTokenAlive, Project: project, Env: env, Accessors: []string{accessor}}, nil, nil)
	if err != nil {
		return false, err
	}
	if ev.Alive == nil {
		return false, errors.New("token lookup job ended without an answer")
	}
	return *ev.Alive, nil
}

// RevokeBreakGlass revokes a grant's tokens on its environment's pool.
func (c *Client) RevokeBreakGlass(ctx context.Context, project, env, grantID string, accessors ...string) error {
	_, err := c.run(ctx, Job{Kind: KindRevoke, PlanID: grantID, Project: project, Env: env, Accessors: accessors}, nil, nil)
	return err
}

// Drift runs a drift check on the environment's pool.
func (c *Client) Drift(ctx context.Context, job runner.DriftJob) (runner.DriftResult, error) {
	ev, err := c.run(ctx, Job{Kind: KindDrift, PlanID: job.ID, Project: job.Target.Project, Env: job.Target.Env, Rev: job.Rev}, nil, nil)
	if err != nil {
		return runner.DriftResult{}, err
	}
	if ev.Drift == nil {
		return runner.DriftResult{}, errors.New("drift job ended without a result")
	}
	return *ev.Drift, nil
}

// Verify runs a verification on the environment's pool.
func (c *Client) Verify(ctx context.Context, job runner.VerifyJob) (runner.VerifyResult, error) {
	steps := job.Steps
	ev, err := c.run(ctx, Job{Kind: KindVerify, PlanID: job.ID, Project: job.Target.Project, Env: job.Target.Env, Rev: job.Rev,
		Verify: &steps}, nil, nil)
	if err != nil {
		return runner.VerifyResult{}, err
	}
	if ev.Verify == nil {
		return runner.VerifyResult{}, errors.New("verify job ended without a result")
	}
	return *ev.Verify, nil
}

// run dispatches j and follows its events until its result.
func (c *Client) run(ctx context.Context, j Job, progress func(string), preview func(approvals.Summary)) (event, error) {
	pool, err := c.o.Pool(j.Project, j.Env)
	if err != nil {
		return event{}, err
	}
	j.ID, j.Pool, j.At = j.PlanID+":"+string(j.Kind)+":"+randomID(), pool, time.Now().UTC()
	body, err := json.Marshal(j)
	if err != nil {
		return event{}, err
	}
	entry, err := signJob(c.o.Signer, body)
	if err != nil {
		return event{}, err
	}
	msgID, err := c.o.Redis.XAdd(ctx, &redis.XAddArgs{Stream: streamKey(c.o.Prefix, pool), Values: entry}).Result()
	if err != nil {
		return event{}, fmt.Errorf("dispatch %s job to pool %s: %w", j.Kind, pool, err)
	}
	log := c.o.Logger.With("plan_id", j.PlanID, "job", j.ID, "pool", pool)
	log.Info("job dispatched", "kind", string(j.Kind))
	pickBy := time.Now().Add(c.o.PickupTimeout)
	picked, last := false, "0"
	for {
		streams, err := c.o.Redis.XRead(ctx, &redis.XReadArgs{Streams: []string{eventsKey(c.o.Prefix, pool, j.ID), last},
			Block: 500 * time.Millisecond, Count: 100}).Result()
		if ctx.Err() != nil {
			return event{}, fmt.Errorf("%w: %w", runner.ErrDetached, ctx.Err())
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return event{}, fmt.Errorf("read job events: %w", err)
		}
		for _, s := range streams {
			for _, m := range s.Messages {
				last = m.ID
				var ev event
				raw, ok := m.Values["event"].(string)
				var probe struct {
					Type      string          `json:"type"`
					Statement json.RawMessage `json:"statement"`
				}
				if !ok || json.Unmarshal([]byte(raw), &probe) != nil {
					continue
				}
				switch {
				case probe.Statement != nil: // a signed result
					ev, err = openResult(c.o.Runners, []byte(raw), expect{job: j.ID, planID: j.PlanID, kind: j.Kind, pool: pool,
						fence: j.Lease.Fence, permit: j.Permit})
				case probe.Type == "result":
					err = fmt.Errorf("%w is not signed", errUnsignedResult)
				default: // picked, progress
					err = json.Unmarshal([]byte(raw), &ev)
				}
				if err != nil {
					if errors.Is(err, errUnsignedResult) {
						c.forged(ctx, j.Project, j.Env, j.PlanID, j.Kind, j.ID, "result on the job's event stream", err)
					}
					continue // as if it never came: wait for a signed one
				}
				switch ev.Type {
				case "picked":
					picked = true
					log.Info("job picked", "worker", ev.Worker, "latency", ev.At.Sub(j.At))
				case "progress":
					if progress != nil {
						progress(ev.Line)
					}
				case "preview":
					// Something to show, never to approve: a click on it
					// waits for the signed result (change.Service).
					if preview != nil && ev.Preview != nil {
						preview(*ev.Preview)
					}
				case "result":
					if ev.SealedWrapped != nil {
						// The wrapping token is on its way to one person; it stays nowhere else.
						c.o.Redis.Del(context.WithoutCancel(ctx), eventsKey(c.o.Prefix, pool, j.ID))
					}
					return ev, ev.Err.err()
				}
			}
		}
		if !picked && time.Now().After(pickBy) {
			// Take the job back; a worker that takes it anyway finds the plan moved on.
			c.o.Redis.XDel(context.WithoutCancel(ctx), streamKey(c.o.Prefix, pool), msgID)
			return event{}, fmt.Errorf("%w: no runner of pool %q took the %s job within %v", ErrNoRunner, pool, j.Kind, c.o.PickupTimeout)
		}
	}
}

// PlanOutcome returns the result of a plan's last plan job, if it ended —
// for a serve replica that finds a plan whose waiting replica went away.
func (c *Client) PlanOutcome(ctx context.Context, p approvals.Plan) (runner.PlanResult, error, bool) {
	ev, ok := c.outcome(ctx, p, KindPlan)
	if !ok {
		return runner.PlanResult{}, nil, false
	}
	var plan runner.PlanResult
	if ev.Plan != nil {
		plan = *ev.Plan
	}
	return plan, ev.Err.err(), true
}

// ApplyOutcome returns the result of a plan's last apply job, if it ended.
func (c *Client) ApplyOutcome(ctx context.Context, p approvals.Plan) (runner.ApplyResult, error, bool) {
	ev, ok := c.outcome(ctx, p, KindApply)
	if !ok {
		return runner.ApplyResult{}, nil, false
	}
	return ev.Apply.result(), ev.Err.err(), true
}

// VerifyOutcome returns the result of the verification of a plan's apply,
// if it ended.
func (c *Client) VerifyOutcome(ctx context.Context, p approvals.Plan) (runner.VerifyResult, error, bool) {
	ev, ok := c.outcome(ctx, p, KindVerify)
	if !ok {
		return runner.VerifyResult{}, nil, false
	}
	if ev.Verify == nil && ev.Err.err() == nil {
		return runner.VerifyResult{}, errors.New("verify job ended without a result"), true
	}
	var res runner.VerifyResult
	if ev.Verify != nil {
		res = *ev.Verify
	}
	return res, ev.Err.err(), true
}

// Executor names the worker that started a plan's apply, if one did.
func (c *Client) Executor(ctx context.Context, p approvals.Plan) (string, bool) {
	pool, err := c.o.Pool(p.Project, p.Env)
	if err != nil {
		return "", false
	}
	name, err := c.o.Redis.Get(ctx, claimKey(c.o.Prefix, pool, p.ID, p.PermitTag())).Result()
	return name, err == nil
}

// outcome is the kept result of p's last job of kind k, once a runner's
// signature on it holds.
func (c *Client) outcome(ctx context.Context, p approvals.Plan, k Kind) (event, bool) {
	pool, err := c.o.Pool(p.Project, p.Env)
	if err != nil {
		return event{}, false
	}
	permit := ""
	if k == KindApply {
		permit = p.PermitTag() // this attempt's, not an earlier one's
	}
	key := outcomeKey(c.o.Prefix, pool, p.ID, k, permit)
	raw, err := c.o.Redis.Get(ctx, key).Bytes()
	if err != nil {
		return event{}, false
	}
	want := expect{planID: p.ID, kind: k, pool: pool, permit: permit}
	if k == KindPlan {
		want.fence = p.Fence // the plan job ran under the plan's lease
	}
	ev, err := openResult(c.o.Runners, raw, want)
	if err != nil {
		sum := sha256.Sum256(raw)
		if _, seen := c.reported.LoadOrStore(key+"\x00"+string(sum[:]), true); !seen {
			c.forged(ctx, p.Project, p.Env, p.ID, k, "", "kept result", err)
		}
		return event{}, false // not found: the plan fails closed
	}
	return ev, true
}

// forged logs, loudly, a job result that no trusted runner key signed for
// its job, and records it as a forgery. The result is not acted on.
func (c *Client) forged(ctx context.Context, project, env, planID string, k Kind, job, where string, err error) {
	c.o.Logger.Error("refused a job result without a valid runner signature: not acted on", "plan_id", planID,
		"job", job, "kind", string(k), "where", where, "err", err)
	if c.o.Audit == nil {
		return
	}
	rerr := c.o.Audit.Record(context.WithoutCancel(ctx), audit.Event{Type: audit.Forgery, Actor: audit.Actor{ID: "twokey"},
		Project: project, Env: env, PlanID: planID, Detail: map[string]string{"what": "job result refused: " + where,
			"kind": string(k), "job": job, "error": err.Error()}})
	if rerr != nil {
		c.o.Logger.Error("audit record of a refused job result not written", "err", rerr)
	}
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
