package redisplans

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner"
)

func TestSealedPlans(t *testing.T) {
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	key := bytes.Repeat([]byte{7}, KeySize)
	s, err := New(rdb, "t:", key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	plan := []byte(`{"password":"hunter2-in-clear"}`)
	if err := s.Save(ctx, "p-1", plan, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, _ := rdb.Get(ctx, s.key("p-1")).Bytes()
	if bytes.Contains(raw, []byte("hunter2")) {
		t.Fatal("plan stored in clear text")
	}
	got, err := s.Load(ctx, "p-1")
	if err != nil || !bytes.Equal(got, plan) {
		t.Fatalf("load: %q %v", got, err)
	}
	// A sealed plan cannot be passed off as another plan.
	rdb.Set(ctx, s.key("p-2"), raw, time.Minute)
	if _, err := s.Load(ctx, "p-2"); !errors.Is(err, runner.ErrNoPlanFile) {
		t.Fatalf("moved plan opened: %v", err)
	}
	other, _ := New(rdb, "t:", bytes.Repeat([]byte{8}, KeySize))
	if _, err := other.Load(ctx, "p-1"); !errors.Is(err, runner.ErrNoPlanFile) {
		t.Fatalf("opened with another key: %v", err)
	}
	if err := s.Delete(ctx, "p-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "p-1"); !errors.Is(err, runner.ErrNoPlanFile) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := New(rdb, "t:", []byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}

// Each pool seals its plans with its own key under its own Redis keys: the
// nonprod key cannot make (or read) a prod plan, even one copied to the
// prod key's place.
func TestPlansSealedPerPool(t *testing.T) {
	srv := stacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	prodKey, nonprodKey := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize)
	prod, _ := ForPool(rdb, "t:", "prod", prodKey)
	nonprod, _ := ForPool(rdb, "t:", "nonprod", nonprodKey)
	if err := prod.Save(ctx, "p-1", []byte("real prod plan"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if prod.key("p-1") != "t:planfile:prod:{p-1}" {
		t.Fatalf("prod plan under %s", prod.key("p-1"))
	}
	// The nonprod key seals a plan of its own choosing and puts it where
	// the prod worker looks.
	if err := nonprod.Save(ctx, "p-1", []byte("forged"), time.Minute); err != nil {
		t.Fatal(err)
	}
	forged, _ := rdb.Get(ctx, nonprod.key("p-1")).Bytes()
	rdb.Set(ctx, prod.key("p-1"), forged, time.Minute)
	if _, err := prod.Load(ctx, "p-1"); !errors.Is(err, runner.ErrNoPlanFile) {
		t.Fatalf("prod opened a plan sealed with the nonprod key: %v", err)
	}
	// Even with the same key, a plan sealed for another pool does not open.
	same, _ := ForPool(rdb, "t:", "nonprod", prodKey)
	_ = same.Save(ctx, "p-2", []byte("x"), time.Minute)
	moved, _ := rdb.Get(ctx, same.key("p-2")).Bytes()
	rdb.Set(ctx, prod.key("p-2"), moved, time.Minute)
	if _, err := prod.Load(ctx, "p-2"); !errors.Is(err, runner.ErrNoPlanFile) {
		t.Fatalf("prod opened another pool's plan: %v", err)
	}
}
