package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/bwrap"
)

// sandbox is the isolation terraform runs get, from runner.sandbox. In auto
// mode a host where bubblewrap cannot start a sandbox is an error: nothing
// runs a pull request's code unconfined unless the config says none.
func sandbox(ctx context.Context, c config.Sandbox, log *slog.Logger) (runner.Sandbox, error) {
	if c.Mode == config.SandboxNone {
		sb := runner.Unconfined{}
		log.Warn("runs are NOT sandboxed (runner.sandbox.mode: none): a pull request's code runs as twokey's own user at plan time", "sandbox", sb.String())
		return sb, nil
	}
	sb, err := bwrap.New(ctx, bwrap.Options{ReadOnly: c.ReadOnly, Writable: c.Writable, UID: c.UID, GID: c.GID})
	if err != nil {
		return nil, fmt.Errorf("runner.sandbox: %w (twokey does not run terraform unconfined unless runner.sandbox.mode is none)", err)
	}
	log.Info("runs are sandboxed", "sandbox", sb.String())
	return sb, nil
}
