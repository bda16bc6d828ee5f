package bot

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

// The response_urls the bot keeps: per channel and user, the latest;
// taken at most 5 times, not after 25 minutes, and never more than
// maxResponseURLs of them.
func TestReplies(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	r := newReplies(func() time.Time { return now })

	if _, ok := r.take("C1", "UA"); ok {
		t.Fatal("a URL from nowhere")
	}
	r.remember("C1", "UA", "https://hooks.example/1")
	r.remember("C1", "UA", "https://hooks.example/2") // the latest wins
	r.remember("C1", "", "https://hooks.example/x")   // ignored
	for i := 0; i < responseURLUses; i++ {
		if u, ok := r.take("C1", "UA"); !ok || u != "https://hooks.example/2" {
			t.Fatalf("use %d: %q %v", i+1, u, ok)
		}
	}
	if _, ok := r.take("C1", "UA"); ok {
		t.Error("a sixth use")
	}
	if _, ok := r.take("C1", "UB"); ok {
		t.Error("another user's URL")
	}

	r.remember("C2", "UA", "https://hooks.example/3")
	now = now.Add(responseURLTTL + time.Second)
	if _, ok := r.take("C2", "UA"); ok {
		t.Error("an expired URL")
	}

	for i := 0; i < maxResponseURLs+10; i++ {
		r.remember(fmt.Sprintf("C%d", i), "UA", "https://hooks.example/n")
		now = now.Add(time.Millisecond)
	}
	if n := len(r.urls); n > maxResponseURLs {
		t.Errorf("%d URLs kept, at most %d", n, maxResponseURLs)
	}
	if _, ok := r.take(fmt.Sprintf("C%d", maxResponseURLs+9), "UA"); !ok {
		t.Error("the newest URL was dropped")
	}
	if _, ok := r.take("C0", "UA"); ok {
		t.Error("the oldest URL was kept past the bound")
	}
}

func TestNotInChannel(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{slack.SlackErrorResponse{Err: "not_in_channel"}, true},
		{fmt.Errorf("post plan message: %w", slack.SlackErrorResponse{Err: "channel_not_found"}), true},
		{slack.SlackErrorResponse{Err: "invalid_blocks"}, false},
		{errors.New("not_in_channel"), false}, // not Slack's answer
		{nil, false},
	} {
		if got := notInChannel(c.err); got != c.want {
			t.Errorf("notInChannel(%v) = %v", c.err, got)
		}
	}
}

// A response_url is a bearer credential: errors about it are logged
// without it.
func TestWithoutURL(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "https://hooks.slack.com/commands/T1/secret", Err: errors.New("connection refused")}
	if got := withoutURL(fmt.Errorf("send: %w", err)).Error(); strings.Contains(got, "secret") || !strings.Contains(got, "connection refused") {
		t.Errorf("withoutURL = %q", got)
	}
}

// A plan message Slack refused because twokey is not in the channel is
// told as how to invite it.
func TestDescribeNotInChannel(t *testing.T) {
	b := &Bot{botName: "twokey"}
	err := fmt.Errorf("post plan message: %w", &NotInChannelError{Channel: "C123", Err: slack.SlackErrorResponse{Err: "not_in_channel"}})
	want := ":wave: twokey is not in <#C123>; invite it with `/invite @twokey` and run the command again."
	if got := b.describe(err); got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}
