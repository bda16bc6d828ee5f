package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
)

func TestIdentities(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, rdb redis.UniversalClient) {
		ctx := context.Background()
		if _, ok, err := s.Identity(ctx, "UCAROL"); ok || err != nil {
			t.Fatalf("before linking: %v, %v", ok, err)
		}
		want := approvals.Identity{Login: "carol-gh", ID: 1003, Emails: []string{"carol@example.com"}}
		if err := s.Link(ctx, "UCAROL", want, time.Now()); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Identity(ctx, "UCAROL")
		if err != nil || !ok || got.Login != want.Login || got.ID != want.ID || len(got.Emails) != 1 {
			t.Fatalf("Identity = %+v, %v, %v", got, ok, err)
		}
		if n, _ := rdb.Exists(ctx, "t:identity:UCAROL").Result(); n != 1 {
			t.Error("the link is not under the store's prefix")
		}
		if had, err := s.Unlink(ctx, "UCAROL"); !had || err != nil {
			t.Fatalf("Unlink = %v, %v", had, err)
		}
		if had, _ := s.Unlink(ctx, "UCAROL"); had {
			t.Error("unlinked twice")
		}
		if _, ok, _ := s.Identity(ctx, "UCAROL"); ok {
			t.Error("still linked")
		}
	})
}
