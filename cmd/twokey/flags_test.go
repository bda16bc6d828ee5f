package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// A grace of zero would quietly mean the two-minute default; it is
// refused, saying so, before anything starts.
func TestShutdownGraceMustBePositive(t *testing.T) {
	for _, cmd := range []string{"serve", "runner"} {
		for _, grace := range []string{"0", "-1s"} {
			var out bytes.Buffer
			code := Main(context.Background(), []string{cmd, "--config", "/nonexistent.yaml", "--shutdown-grace", grace},
				&out, &out, func(string) string { return "" })
			if code == 0 || !strings.Contains(out.String(), "--shutdown-grace must be above zero") {
				t.Errorf("%s --shutdown-grace %s: exit %d, %q", cmd, grace, code, out.String())
			}
		}
	}
}
