package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/approvals/redisstore"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/audit/redisaudit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/ref"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/redisjobs"
	"github.com/twokey/twokey/runner/redislock"
	"github.com/twokey/twokey/runner/redisplans"
)

// nopExec plans and applies instantly.
type nopExec struct{}

func (nopExec) Plan(context.Context, runner.PlanJob) (runner.PlanResult, error) {
	return runner.PlanResult{Digest: "d", Summary: approvals.Summary{Add: 1}}, nil
}

func (nopExec) Apply(_ context.Context, j runner.ApplyJob) (runner.ApplyResult, error) {
	j.Progress("done")
	return runner.ApplyResult{Summary: "ok"}, nil
}

func (nopExec) Drift(context.Context, runner.DriftJob) (runner.DriftResult, error) {
	return runner.DriftResult{}, nil
}

func (nopExec) BreakGlass(context.Context, runner.BreakGlassJob) (runner.Wrapped, error) {
	return runner.Wrapped{WrapToken: "w", Accessor: "a", WrapAccessor: "wa"}, nil
}

func (nopExec) TokenAlive(context.Context, string, string, string) (bool, error) { return false, nil }

func (nopExec) RevokeBreakGlass(context.Context, string, string, string, ...string) error { return nil }

// TestOnRedisCluster runs every Redis adapter through the client serve
// opens for a Redis Cluster of three masters. A multi-key script whose keys
// were not hash-tagged into one slot fails there with CROSSSLOT.
func TestOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	cluster, err := devstack.StartRedisCluster(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	rdb, err := openRedis(ctx, config.Redis{URL: "redis://127.0.0.1:6379/0", Durability: "relaxed",
		Cluster: config.RedisCluster{Addrs: cluster.Addrs()}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()

	locks := redislock.New(rdb, keyPrefix, redislock.WithPools(func(string) string { return "prod" }))
	for i := range 8 { // environments spread over the slots
		key := fmt.Sprintf("infra/env-%d", i)
		l, err := locks.Acquire(ctx, key, runner.Holder{User: "U", PR: i}, time.Minute)
		if err != nil {
			t.Fatalf("acquire %s: %v", key, err)
		}
		if err := locks.Refresh(ctx, l, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := locks.Fenced(ctx, l, []byte("apply_start")); err != nil {
			t.Fatal(err)
		}
		if _, held, err := locks.Holder(ctx, key); err != nil || !held {
			t.Fatalf("holder %s: %v %v", key, held, err)
		}
		next, err := locks.Takeover(ctx, l, runner.Holder{User: "V"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if recs, err := locks.Ledger(ctx, key, 10); err != nil || len(recs) != 1 {
			t.Fatalf("ledger %s: %v %v", key, recs, err)
		}
		if err := locks.Release(ctx, next); err != nil {
			t.Fatal(err)
		}
		if _, _, err := locks.ForceRelease(ctx, key); err != nil {
			t.Fatal(err)
		}
	}

	store := redisstore.New(rdb, keyPrefix, 0)
	for i := range 8 {
		id := fmt.Sprintf("p-cluster%d", i)
		p, err := approvals.New(approvals.Request{ID: id, Project: "infra", Env: "staging", Ref: ref.Ref{PR: 1}, SHA: "abc",
			Requester: "U", Fence: 1, LockOwner: "o", TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := approvals.Update(ctx, store, id, func(p approvals.Plan) (approvals.Plan, error) {
			return approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, time.Now())
		}); err != nil {
			t.Fatal(err)
		}
		if ok, err := store.First(ctx, "envelope:"+id, time.Minute); err != nil || !ok {
			t.Fatal(err)
		}
	}
	if active, err := store.Active(ctx); err != nil || len(active) != 8 {
		t.Fatalf("active: %d %v", len(active), err)
	}
	if err := store.RecordApplied(ctx, "infra", "staging", "abc", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.AppliedAt(ctx, "infra", "staging", "abc"); !ok || err != nil {
		t.Fatal(err)
	}

	plans, err := redisplans.ForPool(rdb, keyPrefix, "prod", bytes.Repeat([]byte{1}, redisplans.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	if err := plans.Save(ctx, "p-cluster0", []byte("plan"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if b, err := plans.Load(ctx, "p-cluster0"); err != nil || string(b) != "plan" {
		t.Fatal(err)
	}

	signer, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	serve := approvals.NewNotary(signer, attest.Keyring{})
	runnerKey, err := attest.GenerateSigner() // the worker signs its results
	if err != nil {
		t.Fatal(err)
	}
	w, err := redisjobs.NewWorker(redisjobs.WorkerOptions{Redis: rdb, Prefix: keyPrefix, Pool: "default", Name: "w", Exec: nopExec{}, Store: store,
		Notary: approvals.NewNotary(nil, attest.NewKeyring(signer.Public())), Signer: runnerKey,
		Target: func(p, e string) (runner.Target, string, error) {
			return runner.Target{Project: p, Env: e}, "default", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer runWorker(t, w)()
	client := redisjobs.NewClient(redisjobs.ClientOptions{Redis: rdb, Prefix: keyPrefix, Signer: signer, Runners: attest.NewKeyring(runnerKey.Public()),
		Pool: func(string, string) (string, error) { return "default", nil }})
	p, err := approvals.New(approvals.Request{ID: "p-clusterjob", Project: "infra", Env: "staging", Ref: ref.Ref{PR: 1}, SHA: "abc",
		Requester: "U", Fence: 1, LockOwner: "o", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Plan(ctx, runner.PlanJob{PlanID: "p-clusterjob", Lease: runner.Lease{Fence: 1},
		Target: runner.Target{Project: "infra", Env: "staging"}}); err != nil {
		t.Fatalf("plan job on the cluster: %v", err)
	}

	// An apply: a signed grant, verified and claimed by the worker.
	now := time.Now()
	p, err = approvals.New(approvals.Request{ID: "p-clusterapply", Project: "infra", Env: "staging", Ref: ref.Ref{PR: 1}, SHA: "abc",
		Requester: "U", Fence: 1, LockOwner: "o", Required: 2, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if p, err = serve.Seal(p); err != nil {
		t.Fatal(err)
	}
	for _, approver := range []string{"UA", "UB"} {
		if p, _, err = serve.Approve(p, approver, true, now); err != nil {
			t.Fatalf("approval by %s: %v", approver, err)
		}
	}
	p, g, err := serve.BeginApply(p, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Apply(ctx, runner.ApplyJob{Permit: g, Rev: runner.Revision{SHA: "abc"}}); err != nil {
		t.Fatalf("apply job on the cluster: %v", err)
	}
}

// TestClusterDurabilityChecksEveryNode plays the operator who left one
// node of a Redis Cluster without persistence: a failover or restart of that
// node forgets the locks and fences of its slots. serve in strict mode
// refuses to start and names the node, whichever master it is, and also a
// replica, which a failover promotes; with every node persisting it starts.
func TestClusterDurabilityChecksEveryNode(t *testing.T) {
	ctx := context.Background()
	durable := stacktest.Durable
	cluster := stacktest.RedisCluster(t, devstack.RedisClusterOptions{Masters: 3, Replicas: 1,
		NodeArgs: func(int) []string { return durable }})
	open := func() error {
		rdb, err := openRedis(ctx, config.Redis{URL: "redis://127.0.0.1:6379/0", Cluster: config.RedisCluster{Addrs: cluster.Addrs()[:1]}}, "")
		if err == nil {
			rdb.Close()
		}
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("every node persists every write, but serve refused: %v", err)
	}
	for _, n := range cluster.Nodes {
		node := redis.NewClient(&redis.Options{Addr: n.Addr})
		role, err := node.Do(ctx, "ROLE").Slice()
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct{ key, value, want string }{
			{"appendonly", "no", `appendonly="no"`},
			{"appendfsync", "everysec", `appendfsync="everysec"`},
		} {
			if err := node.ConfigSet(ctx, tt.key, tt.value).Err(); err != nil {
				t.Fatal(err)
			}
			// The check may ask any node; ask it often enough that one
			// node's answer for all would be caught.
			for range 5 {
				err := open()
				if err == nil || !strings.Contains(err.Error(), n.Addr) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s %s set %s %s: serve started with %v, want a refusal naming it", role[0], n.Addr, tt.key, tt.value, err)
				}
			}
			if err := node.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
				t.Fatal(err)
			}
			if err := node.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
				t.Fatal(err)
			}
		}
		node.Close()
	}
	if err := open(); err != nil {
		t.Fatalf("every node persists again, but serve refused: %v", err)
	}
}

// TestClusterACLUsers opens a Redis Cluster whose nodes load
// deploy/redis/users.acl as each process does in production, as its own
// user, and does each one's work there: serve dispatches a job and records
// an event, a prod runner takes the job, keeps the lock and saves the plan,
// the auditor verifies the record. A user the file does not let find the
// cluster's slots cannot open the cluster at all.
func TestClusterACLUsers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	nodeArgs := []string{"--aclfile", writeACLFile(t, dir), "--appendonly", "yes", "--appendfsync", "always",
		"--masteruser", "twokey-test", "--masterauth", redisPassword("twokey-test")}
	cluster := stacktest.RedisCluster(t, devstack.RedisClusterOptions{Dir: dir, Masters: 3, Replicas: 1,
		NodeArgs: func(int) []string { return nodeArgs }, User: "twokey-test", Password: redisPassword("twokey-test")})
	// Strict durability: the check reads every node's configuration.
	cfg := config.Redis{Cluster: config.RedisCluster{Addrs: cluster.Addrs()[:1]}}
	open := func(user string) redis.UniversalClient {
		c := cfg
		c.URL = "redis://" + user + "@127.0.0.1:6379/0"
		rdb, err := openRedis(ctx, c, config.Secret(redisPassword(user)))
		if err != nil {
			t.Fatalf("%s cannot open the cluster: %v", user, err)
		}
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	serveDB, runnerDB, auditorDB := open("twokey-serve"), open("twokey-runner-prod"), open("twokey-auditor")

	serveKey, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	runnerKey, err := attest.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	trust := attest.NewKeyring(serveKey.Public(), runnerKey.Public())
	record := func(rdb redis.UniversalClient, signer *attest.Signer, what string) {
		log, err := redisaudit.New(rdb, redisaudit.Options{Prefix: keyPrefix, Signer: signer})
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		if err := log.Record(ctx, audit.Event{Type: audit.ConfigLoaded, Actor: audit.Actor{ID: "twokey", Name: what}}); err != nil {
			t.Fatalf("%s records an event: %v", what, err)
		}
	}
	record(serveDB, serveKey, "serve")
	record(runnerDB, runnerKey, "runner")

	// Lock and fence writes wait for a replica (WAIT), as serve's and the runners' do.
	pools, wait := redislock.WithPools(func(string) string { return "prod" }), lockReplicaWait(cfg)
	lease, err := redislock.New(serveDB, keyPrefix, pools, wait).Acquire(ctx, "infra/prod", runner.Holder{User: "U", PR: 1}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	store := redisstore.New(serveDB, keyPrefix, 0)
	p, err := approvals.New(approvals.Request{ID: "p-acluser", Project: "infra", Env: "prod", Ref: ref.Ref{PR: 1}, SHA: "abc",
		Requester: "U", Fence: lease.Fence, LockOwner: lease.Owner, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, p); err != nil {
		t.Fatal(err)
	}

	// The runner's side of a plan: the lease kept, the saved plan stored.
	key := bytes.Repeat([]byte{1}, redisplans.KeySize)
	runnerLocks := redislock.New(runnerDB, keyPrefix, pools, wait)
	runnerPlans, err := redisplans.ForPool(runnerDB, keyPrefix, "prod", key)
	if err != nil {
		t.Fatal(err)
	}
	exec := &clusterRunner{locks: runnerLocks, plans: runnerPlans}
	w, err := redisjobs.NewWorker(redisjobs.WorkerOptions{Redis: runnerDB, Prefix: keyPrefix, Pool: "prod", Name: "prod-1", Exec: exec,
		Store: redisstore.New(runnerDB, keyPrefix, 0), Notary: approvals.NewNotary(nil, attest.NewKeyring(serveKey.Public())), Signer: runnerKey,
		Target: func(p, e string) (runner.Target, string, error) {
			return runner.Target{Project: p, Env: e, LockTTL: time.Minute}, "prod", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer runWorker(t, w)()
	client := redisjobs.NewClient(redisjobs.ClientOptions{Redis: serveDB, Prefix: keyPrefix, Signer: serveKey,
		Runners: attest.NewKeyring(runnerKey.Public()), Pool: func(string, string) (string, error) { return "prod", nil }})
	jctx, jcancel := context.WithTimeout(ctx, 20*time.Second)
	defer jcancel()
	if _, err := client.Plan(jctx, runner.PlanJob{PlanID: "p-acluser", Lease: lease, Target: runner.Target{Project: "infra", Env: "prod"}}); err != nil {
		t.Fatalf("plan job through the runner's user: %v", err)
	}
	if data, err := runnerPlans.Load(ctx, "p-acluser"); err != nil || string(data) != "plan" {
		t.Fatalf("the runner reads back the plan it saved: %q, %v", data, err)
	}
	// The worker acknowledges the job just after it reports the result.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		depth, err := redisjobs.QueueDepth(ctx, runnerDB, keyPrefix, "prod")
		if err == nil && depth.Jobs == 0 {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("the runner's metrics read its queue: %+v, %v", depth, err)
		}
	}

	auditor, err := redisaudit.New(auditorDB, redisaudit.Options{Prefix: keyPrefix, Trust: trust})
	if err != nil {
		t.Fatal(err)
	}
	defer auditor.Close()
	if n, err := auditor.Verify(ctx); err != nil || n != 2 {
		t.Fatalf("the auditor verified %d events: %v", n, err)
	}
}

// clusterRunner plans as the runner does against Redis: it keeps the lease
// and saves the plan.
type clusterRunner struct {
	nopExec
	locks *redislock.Locks
	plans *redisplans.Store
}

func (c *clusterRunner) Plan(ctx context.Context, j runner.PlanJob) (runner.PlanResult, error) {
	if err := c.locks.Refresh(ctx, j.Lease, time.Minute); err != nil {
		return runner.PlanResult{}, fmt.Errorf("refresh the lease: %w", err)
	}
	if err := c.locks.Fenced(ctx, j.Lease, []byte("plan")); err != nil {
		return runner.PlanResult{}, fmt.Errorf("fenced write: %w", err)
	}
	if err := c.plans.Save(ctx, j.PlanID, []byte("plan"), time.Minute); err != nil {
		return runner.PlanResult{}, fmt.Errorf("save the plan: %w", err)
	}
	return runner.PlanResult{Digest: "d", Summary: approvals.Summary{Add: 1}}, nil
}

// runWorker runs w until the function it returns is called.
func runWorker(t *testing.T, w *redisjobs.Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("worker: %v", err)
		}
	}
}
