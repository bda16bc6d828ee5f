// Package change holds twokey's use cases: request a plan, decide on it
// (approve, reject), apply it, expire it, unlock an environment, and the
// break-glass lifecycle (request, approve, mint, deliver, revoke, drift,
// review). It owns the environment lock's whole life.
//
// It takes Slack-free values — a user ID, an environment, a plan ID — and
// talks to the stores, the runner and the audit log through the small
// interfaces below. It reports what happened through a Notifier, which a
// front end (the Slack adapter, package bot) implements; it never renders.
//
// What happens when the second approval arrives is decided in decide.go.
package change

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Runner runs plans, applies, drift checks and break-glass tokens;
// *runner.Runner and a runner pool's client are ones.
type Runner interface {
	Resolve(ctx context.Context, repo string, ref runner.Ref) (runner.Revision, error)
	Plan(ctx context.Context, job runner.PlanJob) (runner.PlanResult, error)
	Apply(ctx context.Context, job runner.ApplyJob) (runner.ApplyResult, error)
	Discard(ctx context.Context, planID string) error
	Drift(ctx context.Context, job runner.DriftJob) (runner.DriftResult, error)
	BreakGlass(ctx context.Context, job runner.BreakGlassJob) (runner.Wrapped, error)
	TokenAlive(ctx context.Context, project, env, accessor string) (bool, error)
	RevokeBreakGlass(ctx context.Context, project, env, grantID string, accessors ...string) error
}

// Locks are the environment locks whose life the service owns: one
// pending change per environment, fenced. runner.Locker is one.
type Locks interface {
	Acquire(ctx context.Context, key string, h runner.Holder, ttl time.Duration) (runner.Lease, error)
	Refresh(ctx context.Context, l runner.Lease, ttl time.Duration) error
	Release(ctx context.Context, l runner.Lease) error
	Holder(ctx context.Context, key string) (runner.Holder, bool, error)
	Takeover(ctx context.Context, old runner.Lease, h runner.Holder, ttl time.Duration) (runner.Lease, error)
	ForceRelease(ctx context.Context, key string) (runner.Holder, bool, error)
}

// Outcomes finds the results of work that finished while nobody waited for
// it (runner pools: the replica that dispatched it stopped).
type Outcomes interface {
	PlanOutcome(ctx context.Context, p approvals.Plan) (runner.PlanResult, error, bool)
	ApplyOutcome(ctx context.Context, p approvals.Plan) (runner.ApplyResult, error, bool)
}

// Deduper remembers keys for a while. First reports whether key is new,
// for exactly one caller across all processes.
type Deduper interface {
	First(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Forget lets key be first again, after acting on it failed.
	Forget(ctx context.Context, key string) error
}

// Promotions records which commits were applied where, for environments
// that require an earlier one.
type Promotions interface {
	RecordApplied(ctx context.Context, project, env, sha string, at time.Time) error
	AppliedAt(ctx context.Context, project, env, sha string) (time.Time, bool, error)
	RecentApplied(ctx context.Context, project, env string, n int) ([]approvals.Applied, error)
}

// History reads the audit record.
type History interface {
	// Newest returns up to n matching events, newest first, from the
	// newest scan events.
	Newest(ctx context.Context, n, scan int, match func(audit.Event) bool) ([]audit.Event, error)
	// Since returns the events from since on, oldest first.
	Since(ctx context.Context, since time.Time) ([]audit.Event, error)
}

// Directory answers who is who: group membership, read fresh enough to
// decide on, and display names for the record. People listed by ID in the
// config are the service's to recognise; the directory knows the groups.
type Directory interface {
	// InAnyGroup reports whether user is a member of any of groups. fresh
	// reads membership from the source now, never from a cache: approvers
	// are checked so right before an apply. An error means membership
	// could not be read: the answer is then "no".
	InAnyGroup(ctx context.Context, user string, groups []string, fresh bool) (bool, error)
	Name(ctx context.Context, user string) string
}

// DedupTTL outlasts a front end's redelivery of an unacknowledged event
// (Slack retries for up to a few minutes).
const DedupTTL = time.Hour

// Options configure a Service.
type Options struct {
	Config *config.Config
	Store  approvals.Store
	Grants approvals.GrantStore
	Locks  Locks
	Runner Runner
	// Outcomes, if set, completes work whose waiting replica stopped; one
	// that is also a VerifyOutcomes completes verifications too.
	Outcomes Outcomes
	// Verifications, if set, remembers the verifications under way, so
	// that one whose replica stopped (a restart) is still reported.
	Verifications Verifications
	// Target says where and how an environment's runs happen.
	Target    func(project, env string) (runner.Target, error)
	Dedup     Deduper
	Promos    Promotions
	Audit     audit.Recorder
	History   History
	Directory Directory
	// Requirements checks environments' GitHub requirements; nil: an
	// environment with requirements refuses every plan.
	Requirements Requirements
	// Identities are the GitHub accounts people linked; nil: only the
	// config's identities.
	Identities Identities
	// Links and Linker, if set, let people link themselves (/tf link github).
	Links  Links
	Linker Linker
	Notify Notifier
	// Drift, if set, shows drift reports with a Plan a fix button; without
	// it a report is a note.
	Drift DriftNotifier
	// Progress, if set, shows apply progress as one message it edits;
	// without it, progress is a thread note per batch.
	Progress Progresser
	// Trim, if set, applies the audit record's retention; the sweeper calls
	// it every ten minutes.
	Trim func(ctx context.Context) (int, error)
	// Changed, if set, is told each time a plan changes (GitHub feedback).
	Changed func(ctx context.Context, planID string)
	// Wrapping checks a break-glass wrapping token right before it is
	// delivered; without it no break-glass token is delivered.
	Wrapping runner.WrapChecker
	// Notary seals plans, signs each approval this process verified and the
	// grant to apply, and counts only signed approvals. nil: a key of this
	// process alone, so no other process can verify what it signed.
	Notary *approvals.Notary
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ShutdownGrace is how long Run waits for running plans and applies
	// after its context ends before interrupting them. Default 2m.
	ShutdownGrace time.Duration
	// SweepInterval is how often open plans are checked for expiry and for
	// work whose process died. Default 5s.
	SweepInterval time.Duration
	// ProgressEvery is how often apply progress is posted. Default 2s.
	ProgressEvery time.Duration
	// Instance names this process in the record of who minted what.
	Instance string
	// Stats, if set, is told what happened, for metrics.
	Stats Stats
}

// Service runs the use cases.
type Service struct {
	o     Options
	cfg   *config.Config
	log   *slog.Logger
	dir   Directory
	n     Notifier
	stats Stats

	// work runs plans and applies; it outlives Run's context by up to
	// ShutdownGrace so a running apply is never cut off without an interrupt.
	workCtx  context.Context
	stopWork context.CancelFunc
	work     sync.WaitGroup
	closing  bool // set when Run's context ends: no new work starts
	workMu   sync.Mutex
	instance string
	// shownLeft is the minutes left each active grant's announcement shows.
	shownMu   sync.Mutex
	shownLeft map[string]int
}

// New returns a Service; Run sweeps and, at the end, drains its work.
func New(o Options) (*Service, error) {
	if o.Config == nil || o.Store == nil || o.Grants == nil || o.Locks == nil || o.Runner == nil || o.Target == nil ||
		o.Dedup == nil || o.Promos == nil || o.Audit == nil || o.History == nil || o.Directory == nil || o.Notify == nil {
		return nil, errors.New("change: Config, Store, Grants, Locks, Runner, Target, Dedup, Promos, Audit, History, Directory and Notify are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 2 * time.Minute
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 2 * time.Second
	}
	if o.Stats == nil {
		o.Stats = noStats{}
	}
	if o.Instance == "" {
		host, _ := os.Hostname()
		o.Instance = fmt.Sprintf("serve@%s-%d", host, os.Getpid())
	}
	if o.Notary == nil {
		signer, err := attest.GenerateSigner()
		if err != nil {
			return nil, err
		}
		o.Logger.Warn("no signing key: approvals and grants are signed with a key of this process alone, " +
			"so no other serve replica or runner can verify them")
		o.Notary = approvals.NewNotary(signer, attest.Keyring{})
	}
	s := &Service{o: o, cfg: o.Config, log: o.Logger, dir: o.Directory, n: o.Notify, stats: o.Stats, instance: o.Instance,
		shownLeft: map[string]int{}}
	s.workCtx, s.stopWork = context.WithCancel(context.Background())
	return s, nil
}

// Run sweeps open plans and grants until ctx ends, then waits for running
// work (interrupting it after ShutdownGrace) and returns.
func (s *Service) Run(ctx context.Context) error {
	defer s.drain()
	s.sweeper(ctx)
	return nil
}

// Go runs fn on the work context, tracked for shutdown. Once Run's context
// has ended, nothing new starts: fn is dropped and Go reports false.
func (s *Service) Go(fn func(ctx context.Context)) bool {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	if s.closing {
		return false
	}
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		fn(s.workCtx)
	}()
	return true
}

// drain waits for running work; after ShutdownGrace it cancels the work
// context, which interrupts terraform (SIGINT) and waits for it to stop.
func (s *Service) drain() {
	s.workMu.Lock()
	s.closing = true
	s.workMu.Unlock()
	done := make(chan struct{})
	go func() {
		s.work.Wait()
		close(done)
	}()
	t := time.NewTimer(s.o.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("shutdown grace over; interrupting running work", "grace", s.o.ShutdownGrace)
		s.stopWork()
		<-done
	}
	s.stopWork()
}

// Started records that a front end connected: the config this process
// runs with, and the workspace it serves.
func (s *Service) Started(ctx context.Context, digest, team string) {
	_ = s.record(ctx, audit.ConfigLoaded, "", nil, map[string]string{"config_sha256": digest, "team": team})
}

// pause waits d, or less if ctx ends first; it reports whether it waited
// the whole time.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
