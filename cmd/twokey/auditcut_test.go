package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/audit"
)

// A Redis writer deletes recent history and moves the chain's anchor past
// it, so what remains still verifies link by link: with serve's password,
// everything up to an applied plan's last event; with a runner's, the whole
// stream. The anchor retention leaves is a signed checkpoint of an event
// older than audit.min_age, so `twokey audit verify` reports both, with or
// without a head file. (Both used to verify "intact".)
func TestCutAuditHistoryIsCaught(t *testing.T) {
	s := newStack(t, func(sc *stackConfig) { sc.acl = true })
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), s.terraform())
	s.config = s.write("twokey.yaml", cfg)
	s.openPR(1, "web")
	s.openPR(2, "db")
	stop := s.startBot()
	s.slash(alice, "plan staging pr-1")
	planID := s.planMessage(1, "Plan ready for review").Buttons()[0].Value
	s.applyWithTwoApprovals("staging · PR #1")
	s.slash(alice, "plan staging pr-2") // history after the applied plan's
	second := s.planMessage(2, "Plan ready for review")
	s.click(alice, second, reject)
	s.waitTS(second.TS, "Rejected")
	stop()
	if code, out := s.auditMain("verify"); code != 0 {
		t.Fatalf("verify before the attack: %d %s", code, out)
	}

	ctx := context.Background()
	stream, last, anchor := keyPrefix+"{audit}:stream", keyPrefix+"{audit}:last", keyPrefix+"{audit}:anchor"
	srv, admin := s.redisAs("twokey-serve"), s.redisAs("")
	msgs, err := srv.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	anchored, err := admin.Get(ctx, anchor).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	k, cut := -1, audit.Event{}
	for i, m := range msgs {
		var e audit.Event
		if json.Unmarshal([]byte(m.Values["event"].(string)), &e) == nil && e.PlanID == planID {
			k, cut = i, e
		}
	}
	if k < 0 || k == len(msgs)-1 {
		t.Fatalf("no event after the applied plan's (%d of %d)", k, len(msgs))
	}
	for _, m := range msgs[:k+1] {
		if err := srv.XDel(ctx, stream, m.ID).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Set(ctx, anchor, cut.Hash, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if code, out := s.auditMain("verify"); code == 0 || !strings.Contains(out, "anchor") {
		t.Fatalf("verify after serve's password cut the applied plan's history: %d %s", code, out)
	}

	// History as it was, so that the runner's attack is caught on its own.
	pipe := admin.TxPipeline()
	pipe.Del(ctx, stream)
	for _, m := range msgs {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: m.ID, Values: m.Values})
	}
	if anchored == "" {
		pipe.Del(ctx, anchor)
	} else {
		pipe.Set(ctx, anchor, anchored, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if code, out := s.auditMain("verify"); code != 0 {
		t.Fatalf("verify of the restored history: %d %s", code, out)
	}

	np := s.redisAs("twokey-runner-nonprod")
	if err := np.Set(ctx, stream, "x", time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n, err := admin.Exists(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream the runner overwrote with a 1ms expiry still exists after 5s")
		}
	}
	head, err := np.Get(ctx, last).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := np.Set(ctx, anchor, head, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if code, out := s.auditMain("verify"); code == 0 {
		t.Fatalf("verify after a runner's password wiped the stream: %d %s", code, out)
	}
}
