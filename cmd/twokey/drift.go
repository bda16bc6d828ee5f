package main

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/twokey/twokey/config"
)

// driftChecker is the use case the schedule triggers (*change.Service).
type driftChecker interface {
	ScheduledDrift(ctx context.Context, project, env string, tick time.Time) (bool, error)
}

// clock is what the drift schedule waits on; tests give their own.
type clock struct {
	now   func() time.Time
	after func(d time.Duration) <-chan time.Time
}

var wallClock = clock{now: time.Now, after: time.After}

// runDriftSchedules triggers every environment's scheduled drift check
// until ctx ends. Every replica runs the same schedule and calls the
// service at the same ticks; the service's per-tick lease lets one of them
// run each check.
func runDriftSchedules(ctx context.Context, cfg *config.Config, svc driftChecker, c clock, log *slog.Logger) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range cfg.Projects {
		for _, e := range p.Environments {
			if e.Drift == nil {
				continue
			}
			sched, err := config.DriftSchedule(e.Drift.Schedule)
			if err != nil {
				return err // validated at load; unreachable
			}
			project, env := p.Name, e.Name
			log := log.With("env", project+"/"+env, "schedule", e.Drift.Schedule)
			g.Go(func() error {
				for {
					tick := sched.Next(c.now().UTC())
					select {
					case <-ctx.Done():
						return nil
					case <-c.after(tick.Sub(c.now())):
					}
					// One check at a time per environment here: a check that
					// outlasts the interval skips the ticks it overlaps.
					ran, err := svc.ScheduledDrift(ctx, project, env, tick)
					if err != nil {
						log.Warn("scheduled drift check", "tick", tick, "err", err)
					} else {
						log.Debug("scheduled drift check", "tick", tick, "ran_here", ran)
					}
				}
			})
		}
	}
	return g.Wait()
}
