package bot

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A 429 is waited out for its Retry-After and the same call sent again;
// a wait past the bound, or past the call's context, is not.
func TestRetryTransport(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies []string
		limit  int
		after  string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, string(b))
		if limit > 0 {
			limit--
			w.Header().Set("Retry-After", after)
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	client := &http.Client{Transport: &retryTransport{next: http.DefaultTransport, max: 3 * time.Second}}
	call := func(ctx context.Context, n int, retryAfter string, body ...io.Reader) (int, []string, error) {
		t.Helper()
		mu.Lock()
		bodies, limit, after = nil, n, retryAfter
		mu.Unlock()
		var b io.Reader = strings.NewReader(url.Values{"channel": {"C1"}, "text": {"hi"}}.Encode())
		if len(body) > 0 {
			b = body[0]
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/chat.postMessage", b)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			return 0, bodies, err
		}
		resp.Body.Close()
		return resp.StatusCode, bodies, nil
	}

	code, sent, err := call(context.Background(), 2, "0")
	if err != nil || code != 200 || len(sent) != 3 || sent[0] != sent[2] || sent[0] == "" {
		t.Errorf("two 429s then ok: %d %v %q", code, err, sent)
	}
	code, sent, _ = call(context.Background(), 1, "1")
	if code != 200 || len(sent) != 2 {
		t.Errorf("Retry-After 1: %d after %d calls", code, len(sent))
	}
	// Past the bound: the 429 is the answer at once (slack-go reports it as
	// a RateLimitedError).
	code, sent, _ = call(context.Background(), 1, "60")
	if code != http.StatusTooManyRequests || len(sent) != 1 {
		t.Errorf("Retry-After 60 with a 3 s bound: %d after %d calls", code, len(sent))
	}
	// A body that cannot be sent again (a file upload's stream) is not.
	code, sent, _ = call(context.Background(), 1, "0", &stream{s: "file"})
	if code != http.StatusTooManyRequests || len(sent) != 1 {
		t.Errorf("a stream's 429: %d after %d calls", code, len(sent))
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, sent, err = call(ctx, 5, "2")
	if !errors.Is(err, context.Canceled) || len(sent) != 1 {
		t.Errorf("cancelled while waiting: %v after %d calls", err, len(sent))
	}
}

// stream is a body http.NewRequest cannot replay.
type stream struct{ s string }

func (r *stream) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}
