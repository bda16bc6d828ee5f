package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// seenTTL is the time to live of the one de-duplication key in Redis that
// ends with suffix (serve's store prefixes its keys with "…seen:").
func (s *stack) seenTTL(suffix string) (string, time.Duration) {
	s.t.Helper()
	ctx := context.Background()
	rdb := s.redisAs("")
	keys, err := rdb.Keys(ctx, "*seen:"+suffix).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	if len(keys) != 1 {
		all, _ := rdb.Keys(ctx, "*seen:*").Result()
		s.t.Fatalf("de-duplication keys for %q: %v (all: %v)", suffix, keys, all)
	}
	ttl, err := rdb.TTL(ctx, keys[0]).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	return keys[0], ttl
}

// The one-hour de-duplication window: a redelivered envelope is ignored
// because its key is in Redis, and that key (like a click's) lives about an
// hour, longer than Slack's retries. Once the key is gone, the same envelope
// counts again: the key is what the window is.
func TestDedupWindowIsAnHour(t *testing.T) {
	s := newStack(t)
	s.openPR(1, "web")
	s.startBot()
	near := func(what string, ttl time.Duration) {
		t.Helper()
		if ttl < 59*time.Minute || ttl > time.Hour {
			t.Fatalf("%s: TTL %v, want about an hour", what, ttl)
		}
	}
	countStatus := func() int {
		n := 0
		for _, m := range s.slack.Messages() {
			if m.Ephemeral && m.For == bob && strings.Contains(m.Content(), "*infra/staging*") {
				n++
			}
		}
		return n
	}

	id, err := s.slack.SlashCommand(bob, channel, "status staging")
	if err != nil {
		t.Fatal(err)
	}
	s.ephemeral(bob, "*infra/staging*")
	key, ttl := s.seenTTL("envelope:" + id)
	near(key, ttl)
	if err := s.slack.Redeliver(id, "timeout"); err != nil {
		t.Fatal(err)
	}
	s.waitLog(1, "duplicate delivery ignored", "key=envelope:"+id+" ")
	if n := countStatus(); n != 1 {
		t.Fatalf("a redelivered command was answered: %d answers", n)
	}

	// A click's key: (plan, action, user, attempt), also for an hour.
	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	planID := msg.Buttons()[0].Value
	s.click(bob, msg, approve)
	s.planMessage(1, "1 more needed")
	key, ttl = s.seenTTL("click:" + planID + ":approve:" + bob + ":*")
	near(key, ttl)

	// Past the window (the key deleted, as its expiry would), the same
	// envelope is new again.
	if err := s.redisAs("").Del(context.Background(), mustKey(t, s, "envelope:"+id)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.slack.Redeliver(id, "timeout"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitFor); countStatus() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the envelope redelivered after its key expired was ignored\nmessages:\n%s", s.dump())
		}
	}
}

func mustKey(t *testing.T, s *stack, suffix string) string {
	t.Helper()
	key, _ := s.seenTTL(suffix)
	return key
}
