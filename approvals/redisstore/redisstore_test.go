package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/devstack/stacktest"
)

// backends runs each test against a real redis-server and against miniredis,
// which the bot's fast unit tests use, so the two cannot drift apart.
func backends(t *testing.T, test func(t *testing.T, s *Store, rdb redis.UniversalClient)) {
	t.Run("redis-server", func(t *testing.T) {
		srv := stacktest.Redis(t)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		test(t, New(rdb, "t:", time.Hour), rdb)
	})
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		test(t, New(rdb, "t:", time.Hour), rdb)
	})
}

var t0 = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

func newPlan(t *testing.T, id string, created time.Time) approvals.Plan {
	t.Helper()
	p, err := approvals.New(approvals.Request{
		ID: id, Project: "infra", Env: "staging", PR: 1, SHA: "abc", Requester: "UREQ",
		Fence: 1, LockOwner: "o", Required: 2, Protected: true, TTL: time.Hour,
	}, created)
	if err != nil {
		t.Fatal(err)
	}
	p, err = approvals.Planned(p, "d", approvals.Summary{Add: 1}, approvals.Assessment{}, time.Hour, created)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateGetPut(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		if _, err := s.Get(ctx, "missing"); !errors.Is(err, approvals.ErrNotFound) {
			t.Fatalf("get missing: %v", err)
		}
		p, err := s.Create(ctx, newPlan(t, "p1", t0))
		if err != nil || p.Version != 1 {
			t.Fatalf("create: %v v%d", err, p.Version)
		}
		if _, err := s.Create(ctx, newPlan(t, "p1", t0)); !errors.Is(err, approvals.ErrExists) {
			t.Fatalf("create twice: %v", err)
		}
		got, err := s.Get(ctx, "p1")
		if err != nil || got.Requester != "UREQ" || got.Summary.Add != 1 || !got.CreatedAt.Equal(t0) {
			t.Fatalf("get: %+v %v", got, err)
		}
		got.Reason = "x"
		stored, err := s.Put(ctx, got)
		if err != nil || stored.Version != 2 {
			t.Fatalf("put: %v v%d", err, stored.Version)
		}
		if _, err := s.Put(ctx, got); !errors.Is(err, approvals.ErrConflict) {
			t.Fatalf("put with stale version: %v", err)
		}
		missing := got
		missing.ID = "nope"
		if _, err := s.Put(ctx, missing); !errors.Is(err, approvals.ErrNotFound) {
			t.Fatalf("put missing: %v", err)
		}
	})
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		p := newPlan(t, "p1", t0)
		p.Required = 100
		if _, err := s.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		const writers = 8
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				_, err := approvals.Update(ctx, s, "p1", func(p approvals.Plan) (approvals.Plan, error) {
					p, _, err := approvals.Approve(p, fmt.Sprintf("U%d", i), true, t0.Add(time.Minute))
					return p, err
				})
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		got, _ := s.Get(ctx, "p1")
		if n := len(approvals.Approvers(got)); n != writers {
			t.Fatalf("%d approvals survived, want %d", n, writers)
		}
	})
}

func TestActiveAndRetention(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, rdb redis.UniversalClient) {
		ctx := context.Background()
		for i, id := range []string{"b", "a", "c"} {
			if _, err := s.Create(ctx, newPlan(t, id, t0.Add(time.Duration(i)*time.Minute))); err != nil {
				t.Fatal(err)
			}
		}
		done, err := approvals.Update(ctx, s, "a", func(p approvals.Plan) (approvals.Plan, error) {
			return approvals.Reject(p, "UREQ", false, "withdrawn", t0)
		})
		if err != nil || done.Status != approvals.StatusRejected {
			t.Fatal(err)
		}
		active, err := s.Active(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(active) != 2 || active[0].ID != "b" || active[1].ID != "c" {
			t.Fatalf("active = %v", ids(active))
		}
		if ttl := rdb.PTTL(ctx, s.planKey("a")).Val(); ttl <= 0 || ttl > time.Hour {
			t.Fatalf("finished plan kept with ttl %v, want ≤ retention", ttl)
		}
		if ttl := rdb.PTTL(ctx, s.planKey("b")).Val(); ttl != -1 {
			t.Fatalf("open plan has ttl %v", ttl)
		}
	})
}

func ids(ps []approvals.Plan) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func TestFirst(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		firsts := 0
		for range 8 {
			wg.Go(func() {
				ok, err := s.First(ctx, "envelope-1", time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					firsts++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if firsts != 1 {
			t.Fatalf("%d callers were first", firsts)
		}
	})
}

// Verifications under way are remembered until they end, with when each
// started (change.Verifications).
func TestVerificationsUnderway(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		at := time.UnixMilli(1_790_000_000_000)
		for i, id := range []string{"p-1", "p-2"} {
			if err := s.Started(ctx, id, at.Add(time.Duration(i)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Ended(ctx, "p-1"); err != nil {
			t.Fatal(err)
		}
		got, err := s.Underway(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !got["p-2"].Equal(at.Add(time.Minute)) {
			t.Fatalf("underway = %v", got)
		}
	})
}

func TestAppliedRecord(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		if _, ok, err := s.AppliedAt(ctx, "infra", "staging", "abc"); ok || err != nil {
			t.Fatalf("applied before any apply: %v %v", ok, err)
		}
		for i, sha := range []string{"abc", "def", "abc"} {
			if err := s.RecordApplied(ctx, "infra", "staging", sha, t0.Add(time.Duration(i)*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		at, ok, err := s.AppliedAt(ctx, "infra", "staging", "abc")
		if err != nil || !ok || !at.Equal(t0) {
			t.Fatalf("abc applied at %v %v %v, want the first time %v", at, ok, err, t0)
		}
		if _, ok, _ := s.AppliedAt(ctx, "infra", "prod", "abc"); ok {
			t.Fatal("applied in staging counted for prod")
		}
		recent, err := s.RecentApplied(ctx, "infra", "staging", 5)
		if err != nil || len(recent) != 2 || recent[0].SHA != "def" || recent[1].SHA != "abc" {
			t.Fatalf("recent = %+v %v", recent, err)
		}
	})
}

// Grants are versioned like plans; an unreviewed grant stays open after it
// ended, and leaves the open set once reviewed.
func TestGrants(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, rdb redis.UniversalClient) {
		ctx := context.Background()
		g, err := approvals.NewBreakGlass(approvals.GrantRequest{ID: "bg-1", Project: "infra", Env: "prod", Requester: "UERIN",
			Reason: "fire", Duration: time.Minute, Required: 0, Policies: []string{"p"}, Channel: "CSEC", Minter: "serve"}, t0)
		if err != nil {
			t.Fatal(err)
		}
		if g, err = s.CreateGrant(ctx, g); err != nil || g.Version != 1 {
			t.Fatalf("create: %v %+v", err, g)
		}
		if _, err := s.CreateGrant(ctx, g); !errors.Is(err, approvals.ErrExists) {
			t.Fatalf("create twice: %v", err)
		}
		stale := g
		g, err = approvals.UpdateGrant(ctx, s, g.ID, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
			return approvals.Minted(g, "acc", "wrap", t0.Add(time.Minute), t0.Add(time.Minute), t0)
		})
		if err != nil || g.Version != 2 || g.Status != approvals.GrantActive {
			t.Fatalf("mint: %v %+v", err, g)
		}
		stale.Note = "lost write"
		if _, err := s.PutGrant(ctx, stale); !errors.Is(err, approvals.ErrConflict) {
			t.Fatalf("stale write: %v", err)
		}
		g, _ = approvals.UpdateGrant(ctx, s, g.ID, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
			return approvals.EndGrant(g, approvals.OutcomeExpired, "", "", t0.Add(time.Minute))
		})
		if open, err := s.OpenGrants(ctx); err != nil || len(open) != 1 || open[0].Status != approvals.GrantEnded {
			t.Fatalf("an ended, unreviewed grant is still open: %v %+v", err, open)
		}
		for _, u := range []string{"UBOB", "UCAROL"} {
			if _, err := approvals.UpdateGrant(ctx, s, g.ID, func(g approvals.BreakGlass) (approvals.BreakGlass, error) {
				return approvals.ReviewGrant(g, u, true, "", t0.Add(time.Hour))
			}); err != nil {
				t.Fatal(err)
			}
		}
		if open, err := s.OpenGrants(ctx); err != nil || len(open) != 0 {
			t.Fatalf("a reviewed grant is closed: %v %+v", err, open)
		}
		if g, err := s.GetGrant(ctx, "bg-1"); err != nil || len(g.Reviews) != 2 {
			t.Fatalf("the closed grant is kept: %v %+v", err, g)
		}
		if ttl := rdb.PTTL(ctx, s.grantKey("bg-1")).Val(); ttl <= 0 {
			t.Fatalf("a closed grant is kept for the retention period, ttl %v", ttl)
		}
	})
}
