package bot

import (
	"io"
	"net/http"
	"strconv"
	"time"
)

// MaxRateLimitWait bounds how long one Web API call waits out Slack's 429s
// in total; past it, the call fails with slack-go's RateLimitedError.
const MaxRateLimitWait = 30 * time.Second

// retryTransport honours Slack's rate limits on every Web API call: a 429
// is waited out for its Retry-After (1 s if absent) and the call sent
// again, while the call's total wait stays within max and its context
// lives. A request whose body cannot be replayed (a file upload's stream)
// is not retried.
type retryTransport struct {
	next http.RoundTripper
	max  time.Duration
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var waited time.Duration
	for {
		resp, err := t.next.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || req.Body != nil && req.GetBody == nil {
			return resp, err
		}
		after := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			after = time.Duration(s) * time.Second
		}
		if waited+after > t.max {
			return resp, nil // slack-go makes it a RateLimitedError
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		timer := time.NewTimer(after)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
		waited += after
		next := req.Clone(req.Context())
		if req.GetBody != nil {
			if next.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		req = next
	}
}
