package redisstore

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
)

// A plan taken for syncing to GitHub stays owed until its sync ends: a
// syncer that dies mid-sync loses nothing (RequeueDirty marks it again),
// and a plan marked again while it syncs is synced again.
func TestDirtySurvivesASyncerCrash(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ redis.UniversalClient) {
		ctx := context.Background()
		take := func() []string {
			t.Helper()
			ids, err := s.TakeDirty(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(ids)
			return ids
		}
		for _, id := range []string{"p-a", "p-b"} {
			if err := s.MarkDirty(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if got := take(); !slices.Equal(got, []string{"p-a", "p-b"}) {
			t.Fatalf("taken %v", got)
		}
		// p-a changes again while it syncs; p-a's sync ends, p-b's syncer dies.
		if err := s.MarkDirty(ctx, "p-a"); err != nil {
			t.Fatal(err)
		}
		if err := s.DoneDirty(ctx, "p-a"); err != nil {
			t.Fatal(err)
		}
		if got := take(); !slices.Equal(got, []string{"p-a"}) {
			t.Fatalf("after p-a changed mid-sync: taken %v, want [p-a]", got)
		}
		if err := s.DoneDirty(ctx, "p-a"); err != nil {
			t.Fatal(err)
		}
		if got := take(); len(got) != 0 {
			t.Fatalf("nothing owed, yet taken %v", got)
		}
		// The next syncer to start picks up what the dead one had taken.
		if err := s.RequeueDirty(ctx); err != nil {
			t.Fatal(err)
		}
		if got := take(); !slices.Equal(got, []string{"p-b"}) {
			t.Fatalf("after a requeue: taken %v, want the dead syncer's p-b", got)
		}
	})
}
