package promstats

import (
	"bytes"
	"io"
	"net/http"
)

// Transport counts the failed calls of api (slack, github) that go
// through next (nil: http.DefaultTransport): transport errors, 4xx and
// 5xx answers, 429s, and — Slack answers its errors with 200 — bodies
// that say "ok":false.
func (m *Metrics) Transport(api string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{m: m, api: api, next: next}
}

type transport struct {
	m    *Metrics
	api  string
	next http.RoundTripper
}

// slackBody bounds how much of a Slack answer is read to find "ok":false;
// larger answers (history, lists) are passed on unread.
const slackBody = 64 << 10

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	switch {
	case err != nil:
		t.m.apiErrors.WithLabelValues(t.api, "transport").Inc()
		return resp, err
	case resp.StatusCode == http.StatusTooManyRequests:
		t.m.rateLimited.WithLabelValues(t.api).Inc()
	case resp.StatusCode >= 500:
		t.m.apiErrors.WithLabelValues(t.api, "http_5xx").Inc()
	case resp.StatusCode >= 400 && resp.StatusCode != http.StatusNotFound:
		// 404 is GitHub's answer for a PR or commit that is not there: the
		// user's mistake, counted as a refusal, not an API error.
		t.m.apiErrors.WithLabelValues(t.api, "http_4xx").Inc()
	case t.api == "slack" && resp.ContentLength <= slackBody: // -1: unknown
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, slackBody+1))
		rest := resp.Body
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), rest), rest}
		if rerr == nil && okFalse(body) {
			t.m.apiErrors.WithLabelValues(t.api, "not_ok").Inc()
		}
	}
	return resp, nil
}

// okFalse reports whether a Slack answer says "ok":false (allowing the
// space some encoders put after the colon).
func okFalse(body []byte) bool {
	return bytes.Contains(body, []byte(`"ok":false`)) || bytes.Contains(body, []byte(`"ok": false`))
}
