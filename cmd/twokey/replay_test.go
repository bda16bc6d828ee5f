package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/runner/redisjobs"
)

// An attacker with serve's Redis password captures the signed job of a
// genuine break-glass request and replays it once the token was delivered.
// The worker mints again, but seals the wrapping token to the one-time key
// of the serve replica that dispatched the original job, which is gone: the
// attacker reads nothing it can unwrap. (It used to read the wrapping token
// in clear and unwrap a live prod break-glass token.)
func TestReplayedBreakGlassJobGivesNoToken(t *testing.T) {
	w := newPoolWorld(t)
	w.startServe()
	w.startRunner("prod", "prod-1")
	ctx := context.Background()
	atk := w.redisAs("twokey-serve")

	captured := make(chan redis.XMessage, 16)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		last := "0"
		for cctx.Err() == nil {
			res, err := atk.XRead(cctx, &redis.XReadArgs{Streams: []string{keyPrefix + "jobs:{prod}", last}, Block: 100 * time.Millisecond}).Result()
			if err != nil {
				continue
			}
			for _, s := range res {
				for _, m := range s.Messages {
					last = m.ID
					captured <- m
				}
			}
		}
	}()
	w.slash(erin, `breakglass prod 10m "queue stuck"`)
	w.dmTo(erin, "vault unwrap")
	cancel()

	var entry redis.XMessage
	var job redisjobs.Job
	for len(captured) > 0 {
		m := <-captured
		var j redisjobs.Job
		if raw, ok := m.Values["job"].(string); ok && json.Unmarshal([]byte(raw), &j) == nil && j.Kind == redisjobs.KindBreakGlass {
			entry, job = m, j
		}
	}
	if job.ID == "" {
		t.Fatal("no break-glass job captured")
	}
	if err := atk.Del(ctx, keyPrefix+"jobseen:prod:{"+job.ID+"}").Err(); err != nil {
		t.Fatalf("del jobseen: %v", err)
	}
	if err := atk.XAdd(ctx, &redis.XAddArgs{Stream: keyPrefix + "jobs:{prod}", Values: entry.Values}).Err(); err != nil {
		t.Fatalf("replay: %v", err)
	}
	tokenRE := regexp.MustCompile(`hv[sbr]\.[A-Za-z0-9_-]{20,}`)
	var result string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && result == ""; time.Sleep(50 * time.Millisecond) {
		for _, m := range atk.XRange(ctx, keyPrefix+"job:prod:{"+job.ID+"}", "-", "+").Val() {
			if raw, _ := m.Values["event"].(string); strings.Contains(raw, `"type":"result"`) {
				result = raw
			}
		}
	}
	if result == "" {
		t.Fatalf("the replayed job got no result\n%s", w.logs.String())
	}
	if strings.Contains(result, "wrap_token") || tokenRE.MatchString(result) {
		t.Fatalf("the replayed job's result gives the attacker a token: %s", result)
	}
	t.Logf("the replayed job's result holds only a sealed token: %.120s…", result)
}
