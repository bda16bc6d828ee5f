package bwrap

import "time"

// SetGateSetUp changes how long Open waits for a gate's sandbox, for a test.
func SetGateSetUp(d time.Duration) (restore func()) {
	old := gateSetUp
	gateSetUp = d
	return func() { gateSetUp = old }
}
