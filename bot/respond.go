package bot

import (
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/slack-go/slack"
)

// A response_url answers for 30 minutes and 5 times (Slack's limits); the
// bot keeps one a little less long, and a bounded number of them.
const (
	responseURLTTL  = 25 * time.Minute
	responseURLUses = 5
	maxResponseURLs = 2048
)

// replies remembers the latest response_url of each channel and user — the
// way to answer someone where the bot cannot post, in a channel it was not
// invited to. The URLs are bearer credentials: they are never logged.
type replies struct {
	mu   sync.Mutex
	now  func() time.Time
	urls map[replyKey]*reply
}

type replyKey struct{ channel, user string }

type reply struct {
	url  string
	at   time.Time
	left int
}

func newReplies(now func() time.Time) *replies {
	return &replies{now: now, urls: map[replyKey]*reply{}}
}

// remember keeps url as the way to answer user in channel.
func (r *replies) remember(channel, user, url string) {
	if url == "" || channel == "" || user == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	k := replyKey{channel, user}
	if _, known := r.urls[k]; !known && len(r.urls) >= maxResponseURLs {
		r.prune(now)
	}
	r.urls[k] = &reply{url: url, at: now, left: responseURLUses}
}

// prune forgets the expired URLs and, if that is not enough, the oldest.
// r.mu must be held.
func (r *replies) prune(now time.Time) {
	var oldest replyKey
	var oldestAt time.Time
	for k, v := range r.urls {
		if now.Sub(v.at) > responseURLTTL {
			delete(r.urls, k)
			continue
		}
		if oldestAt.IsZero() || v.at.Before(oldestAt) {
			oldest, oldestAt = k, v.at
		}
	}
	if len(r.urls) >= maxResponseURLs {
		delete(r.urls, oldest)
	}
}

// take returns the URL to answer user in channel with, counting the use.
func (r *replies) take(channel, user string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := replyKey{channel, user}
	v, ok := r.urls[k]
	if !ok {
		return "", false
	}
	if r.now().Sub(v.at) > responseURLTTL || v.left <= 0 {
		delete(r.urls, k)
		return "", false
	}
	v.left--
	return v.url, true
}

// notInChannel reports whether Slack refused a post because the bot is not
// a member of the channel (not_in_channel), or cannot see it at all — a
// private channel or someone else's direct messages (channel_not_found).
func notInChannel(err error) bool {
	var se slack.SlackErrorResponse
	return errors.As(err, &se) && (se.Err == "not_in_channel" || se.Err == "channel_not_found")
}

// NotInChannelError is a post Slack refused because twokey is not a member
// of the channel.
type NotInChannelError struct {
	Channel string
	Err     error
}

func (e *NotInChannelError) Error() string {
	return "twokey is not in channel " + e.Channel + ": " + e.Err.Error()
}
func (e *NotInChannelError) Unwrap() error { return e.Err }

// withoutURL is err with any URL it names (a response_url is a bearer
// credential) left out, for the log.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New(ue.Op + " <response_url>: " + ue.Err.Error())
	}
	return err
}
