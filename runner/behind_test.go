package runner

import (
	"context"
	"testing"
	"time"
)

// A read-back waits while another plan has not shown its changes, and no
// longer than its bound, or than its context allows.
func TestReadBackWaitsForOtherPlansToShowTheirs(t *testing.T) {
	var p planning
	ctx := context.Background()
	waited := func(ctx context.Context, max time.Duration) <-chan struct{} {
		done := make(chan struct{})
		go func() { p.wait(ctx, max); close(done) }()
		return done
	}
	select {
	case <-waited(ctx, time.Hour):
	case <-time.After(10 * time.Second):
		t.Fatal("waited with no plan before its changes")
	}

	a, b := p.start(), p.start()
	done := waited(ctx, time.Hour)
	a()
	a() // counted out once
	select {
	case <-done:
		t.Fatal("went on while another plan had not shown its changes")
	case <-time.After(50 * time.Millisecond):
	}
	b()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting once every plan had shown its changes")
	}

	c := p.start()
	defer c()
	select {
	case <-waited(ctx, 20*time.Millisecond):
	case <-time.After(10 * time.Second):
		t.Fatal("waited past its bound")
	}
	cctx, cancel := context.WithCancel(ctx)
	done = waited(cctx, time.Hour)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("waited past its context")
	}
}
