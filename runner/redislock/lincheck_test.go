package redislock

// The lock's promise — never two holders, fences strictly rising — checked
// the way a distributed-systems test does: several OS processes hammer one
// redis-server, every operation's invocation and response are recorded, and
// porcupine decides whether some sequential execution of a lock with leases
// explains the whole history.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

var full = flag.Bool("twokey.full", false, "run the linearizability check at full size")

const workerEnv = "TWOKEY_LOCK_WORKER"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(workerEnv); cfg != "" {
		os.Exit(worker(cfg))
	}
	os.Exit(m.Run())
}

// workerConfig tells a worker process what to do.
type workerConfig struct {
	Mode       string // "history" or "hold"
	Redis      string
	Process    int
	Goroutines int
	Ops        int
	TTL        time.Duration
	Keys       []string
	Out        string
}

// op is one recorded lock operation.
type op struct {
	Client int    `json:"c"`
	Kind   string `json:"k"` // acquire, refresh, release
	Key    string `json:"key"`
	Owner  string `json:"o"`
	Call   int64  `json:"call"`
	Return int64  `json:"ret"`
	OK     bool   `json:"ok"`
	Fence  int64  `json:"f"`
}

func worker(raw string) int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis, PoolSize: cfg.Goroutines + 2})
	defer rdb.Close()
	locks := New(rdb, "lin:", WithLedgerLength(1<<30))
	if cfg.Mode == "hold" {
		return hold(locks, cfg)
	}
	var (
		mu      sync.Mutex
		history []op
		wg      sync.WaitGroup
		failed  error
	)
	for g := range cfg.Goroutines {
		wg.Go(func() {
			client := cfg.Process*100 + g
			rng := rand.New(rand.NewPCG(uint64(client), uint64(time.Now().UnixNano())))
			var mine []op
			var lease *runner.Lease
			inSection := false
			ctx := context.Background()
			for range cfg.Ops {
				if lease == nil {
					key := cfg.Keys[rng.IntN(len(cfg.Keys))]
					o := op{Client: client, Kind: "acquire", Key: key, Call: time.Now().UnixNano()}
					l, err := locks.Acquire(ctx, key, runner.Holder{User: fmt.Sprint(client)}, cfg.TTL)
					o.Return = time.Now().UnixNano()
					var le *runner.LockedError
					switch {
					case err == nil:
						o.OK, o.Owner, o.Fence = true, l.Owner, l.Fence
						lease = &l
						if rng.IntN(2) == 0 {
							inSection = locks.Fenced(ctx, l, []byte(fmt.Sprintf("enter %d %d", l.Fence, client))) == nil
						}
					case errors.As(err, &le):
						o.Fence = le.Holder.Fence
						time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond) // back off, as a refused user would
					default:
						mu.Lock()
						failed = err
						mu.Unlock()
						return
					}
					mine = append(mine, o)
					continue
				}
				switch r := rng.IntN(100); {
				case r < 10: // stall past the lease, as a paused or slow holder would
					time.Sleep(cfg.TTL + time.Duration(rng.IntN(10))*time.Millisecond)
				case r < 60:
					o := op{Client: client, Kind: "refresh", Key: lease.Key, Owner: lease.Owner, Call: time.Now().UnixNano()}
					err := locks.Refresh(ctx, *lease, cfg.TTL)
					o.Return = time.Now().UnixNano()
					o.OK = err == nil
					if err != nil && !errors.Is(err, runner.ErrLockLost) {
						mu.Lock()
						failed = err
						mu.Unlock()
						return
					}
					mine = append(mine, o)
					if !o.OK {
						lease, inSection = nil, false
					}
				default:
					if inSection {
						_ = locks.Fenced(ctx, *lease, []byte(fmt.Sprintf("exit %d %d", lease.Fence, client)))
						inSection = false
					}
					o := op{Client: client, Kind: "release", Key: lease.Key, Owner: lease.Owner, Call: time.Now().UnixNano()}
					n, err := releaseScript.Run(ctx, locks.rdb, locks.keys(lease.Key), lease.Owner).Int()
					o.Return = time.Now().UnixNano()
					if err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
						return
					}
					o.OK = n > 0
					mine = append(mine, o)
					lease = nil
				}
			}
			mu.Lock()
			history = append(history, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if failed != nil {
		fmt.Fprintln(os.Stderr, "worker:", failed)
		return 1
	}
	b, _ := json.Marshal(history)
	if err := os.WriteFile(cfg.Out, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// hold takes the lock, writes a fenced record, keeps its lease alive, and
// reports on stdout: HELD <fence>, then LOST when a refresh fails, then the
// outcome of a fenced write it makes when told to on stdin.
func hold(locks *Locks, cfg workerConfig) int {
	ctx := context.Background()
	l, err := locks.Acquire(ctx, cfg.Keys[0], runner.Holder{User: "paused"}, cfg.TTL)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	if err := locks.Fenced(ctx, l, []byte(fmt.Sprintf("enter %d paused", l.Fence))); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	lost := make(chan struct{})
	go runner.KeepLease(ctx, locks, l, cfg.TTL, func(error) { close(lost) })
	fmt.Println("HELD", l.Fence)
	<-lost
	fmt.Println("LOST") // the work the lease protected would be interrupted here
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "write" {
			if err := locks.Fenced(ctx, l, []byte(fmt.Sprintf("late %d paused", l.Fence))); err != nil {
				fmt.Println("REJECTED", err)
			} else {
				fmt.Println("ACCEPTED")
			}
			return 0
		}
	}
	return 0
}

// lockState is the model's view of one lock.
type lockState struct {
	Holder       string // owner token, "" when free
	Fence        int64
	Since, Until int64 // the last grant or refresh happened within [Since, Until]
}

type lockInput struct {
	Kind, Owner  string
	Call, Return int64
}

type lockOutput struct {
	OK    bool
	Fence int64
}

// skew tolerates timestamps taken in different processes.
const skew = int64(5 * time.Millisecond)

// lockModel is a lock with leases of ttl where expiry may happen after the
// deadline: a lease granted at some instant in [Since, Until] may be gone
// once ttl has passed since Since, and is surely gone once ttl (plus skew)
// has passed since Until.
func lockModel(ttl time.Duration) porcupine.Model {
	t := int64(ttl)
	m := porcupine.NondeterministicModel{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, o := range h {
				k := o.Metadata.(string)
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], o)
			}
			var out [][]porcupine.Operation
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() []interface{} { return []interface{}{lockState{}} },
		Step: func(state, input, output interface{}) []interface{} {
			s, in, out := state.(lockState), input.(lockInput), output.(lockOutput)
			var pre []lockState
			switch {
			case s.Holder == "":
				pre = []lockState{s}
			case in.Call >= s.Until+t+skew: // surely expired
				pre = []lockState{{Fence: s.Fence}}
			case in.Return >= s.Since+t: // maybe expired
				pre = []lockState{s, {Fence: s.Fence}}
			default:
				pre = []lockState{s}
			}
			var next []interface{}
			for _, p := range pre {
				switch in.Kind {
				case "acquire":
					if out.OK && p.Holder == "" && out.Fence == p.Fence+1 {
						next = append(next, lockState{Holder: in.Owner, Fence: out.Fence, Since: in.Call, Until: in.Return})
					}
					if !out.OK && p.Holder != "" && out.Fence == p.Fence {
						next = append(next, p)
					}
				case "refresh":
					if out.OK && p.Holder == in.Owner {
						next = append(next, lockState{Holder: p.Holder, Fence: p.Fence, Since: in.Call, Until: in.Return})
					}
					if !out.OK && p.Holder != in.Owner {
						next = append(next, p)
					}
				case "release":
					if out.OK && p.Holder == in.Owner {
						next = append(next, lockState{Fence: p.Fence})
					}
					if !out.OK && p.Holder != in.Owner {
						next = append(next, p)
					}
				}
			}
			return next
		},
		DescribeOperation: func(input, output interface{}) string {
			in, out := input.(lockInput), output.(lockOutput)
			return fmt.Sprintf("%s(%.6s) → %v fence %d", in.Kind, in.Owner, out.OK, out.Fence)
		},
	}
	return m.ToModel()
}

func runWorkers(t *testing.T, addr string, processes, goroutines, ops int, ttl time.Duration, keys []string) []op {
	t.Helper()
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for p := range processes {
		cfg, _ := json.Marshal(workerConfig{Mode: "history", Redis: addr, Process: p, Goroutines: goroutines,
			Ops: ops, TTL: ttl, Keys: keys, Out: filepath.Join(dir, fmt.Sprintf("h%d.json", p))})
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), workerEnv+"="+string(cfg))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	var history []op
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("worker %d: %v", p, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("h%d.json", p)))
		if err != nil {
			t.Fatal(err)
		}
		var h []op
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		history = append(history, h...)
	}
	return history
}

// TestLockLinearizable: 3 processes × 8 goroutines acquire, refresh and
// release eight locks with a 40ms lease, stalling past it now and then; the
// history must be linearizable against lockModel, and the fenced sink must
// show critical sections that never overlap, in rising fence order.
func TestLockLinearizable(t *testing.T) {
	ops := 1000 // ≥ 20,000 operations
	if *full {
		ops = 5000
	}
	const ttl = 40 * time.Millisecond
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	srv := stacktest.Redis(t)
	start := time.Now()
	history := runWorkers(t, srv.Addr, 3, 8, ops, ttl, keys)
	ran := time.Since(start)

	var pops []porcupine.Operation
	kinds := map[string]int{}
	for _, o := range history {
		kinds[fmt.Sprintf("%s/%v", o.Kind, o.OK)]++
		pops = append(pops, porcupine.Operation{ClientId: o.Client, Metadata: o.Key,
			Input:  lockInput{Kind: o.Kind, Owner: o.Owner, Call: o.Call, Return: o.Return},
			Output: lockOutput{OK: o.OK, Fence: o.Fence}, Call: o.Call, Return: o.Return})
	}
	start = time.Now()
	res := porcupine.CheckOperationsTimeout(lockModel(ttl), pops, 5*time.Minute)
	t.Logf("%d operations from 3 processes × 8 goroutines in %v (%v); checked in %v: %v",
		len(history), ran.Round(time.Millisecond), kinds, time.Since(start).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		t.Fatalf("lock history is not linearizable: %v", res)
	}

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	locks := New(rdb, "lin:")
	sections := 0
	for _, key := range keys {
		recs, err := locks.Ledger(context.Background(), key, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		sections += checkSink(t, key, recs)
	}
	t.Logf("fenced sink: %d critical sections, none overlapping", sections)
}

// checkSink verifies a ledger of "enter <fence> <client>" / "exit …"
// records: fences never fall, and between a section's enter and exit no
// other holder wrote. It returns the number of sections.
func checkSink(t *testing.T, key string, recs [][]byte) int {
	t.Helper()
	var (
		last    int64
		open    string // "fence client" of the section in progress
		entered int
	)
	for i, r := range recs {
		var kind, client string
		var fence int64
		if _, err := fmt.Sscan(string(r), &kind, &fence, &client); err != nil {
			t.Fatalf("%s: bad record %q", key, r)
		}
		if fence < last {
			t.Fatalf("%s: record %d has fence %d after %d", key, i, fence, last)
		}
		last = fence
		id := fmt.Sprint(fence, " ", client)
		switch kind {
		case "enter":
			entered++
			open = id // an open section whose holder lost its lease is simply left
		case "exit":
			if open != id {
				t.Fatalf("%s: record %d: %s exits while %q holds the section", key, i, id, open)
			}
			open = ""
		}
	}
	return entered
}

// TestPausedHolderIsFencedOut: a holder process is stopped (SIGSTOP) for
// twice its lease; meanwhile another holder takes the lock and writes. When
// the first resumes, it notices its lease is lost, and its late write is
// rejected by the fence.
func TestPausedHolderIsFencedOut(t *testing.T) {
	const ttl = 300 * time.Millisecond
	srv := stacktest.Redis(t)
	cfg, _ := json.Marshal(workerConfig{Mode: "hold", Redis: srv.Addr, TTL: ttl, Keys: []string{"paused"}})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), workerEnv+"="+string(cfg))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("holder exited: %v", lines.Err())
		}
		return lines.Text()
	}
	if l := next(); !strings.HasPrefix(l, "HELD") {
		t.Fatalf("holder said %q", l)
	}

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	locks := New(rdb, "lin:")
	second, err := locks.Acquire(context.Background(), "paused", runner.Holder{User: "second"}, time.Minute)
	if err != nil {
		t.Fatalf("the lease of a paused holder did not end: %v", err)
	}
	if err := locks.Fenced(context.Background(), second, []byte(fmt.Sprintf("enter %d second", second.Fence))); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if l := next(); l != "LOST" {
		t.Fatalf("resumed holder said %q, want LOST", l)
	}
	fmt.Fprintln(stdin, "write")
	if l := next(); !strings.HasPrefix(l, "REJECTED") || !strings.Contains(l, "lock lost") {
		t.Fatalf("late write: %q", l)
	}
	recs, _ := locks.Ledger(context.Background(), "paused", 10)
	var got []string
	for _, r := range recs {
		got = append(got, strings.Fields(string(r))[0]+" "+strings.Fields(string(r))[2])
	}
	if !slices.Equal(got, []string{"enter paused", "enter second"}) {
		t.Fatalf("ledger = %q", got)
	}
}
