// Package bot is twokey's Slack front end and the only importer of
// slack-go. It holds a Socket Mode connection, acknowledges every envelope at
// once, and drives the flow: /tf plan → plan message with Approve / Reject →
// two approvals → apply, reporting each step in the channel and every error
// to the one user who caused it.
//
// All state lives in the approvals store and the environment locks, so any
// bot process — a restarted one included — can handle any click.
package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

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

// Deduper remembers keys for a while. First reports whether key is new,
// for exactly one caller across all bot processes.
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

// DedupTTL outlasts Slack's redelivery of an unacknowledged envelope, which
// retries for up to a few minutes.
const DedupTTL = time.Hour

// Options configure a Bot.
type Options struct {
	Config   *config.Config
	BotToken config.Secret
	AppToken config.Secret
	Store    approvals.Store
	Grants   approvals.GrantStore
	Locks    runner.Locker
	Runner   Runner
	// Target says where and how an environment's runs happen.
	Target  func(project, env string) (runner.Target, error)
	Dedup   Deduper
	Promos  Promotions
	Audit   audit.Recorder
	History History
	// GitHub, if set, receives a comment per plan and commit statuses;
	// GitHubState remembers what was written there.
	GitHub      PullRequests
	GitHubState GitHubState
	// Wrapping checks a break-glass wrapping token right before it is
	// delivered; without it no break-glass token is delivered.
	Wrapping runner.WrapChecker
	// Notary seals plans, signs each approval this process verified and the
	// grant to apply, and counts only signed approvals. nil: a key of this
	// process alone, so no other process can verify what it signed.
	Notary *approvals.Notary
	// ConfigDigest is recorded when the bot starts (config_loaded).
	ConfigDigest string
	Logger       *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// GroupTTL bounds how long user group membership is cached; at most
	// (and by default) 60s.
	GroupTTL time.Duration
	// ShutdownGrace is how long Run waits for running plans and applies
	// after its context ends before interrupting them. Default 2m.
	ShutdownGrace time.Duration
	// SweepInterval is how often open plans are checked for expiry and for
	// work whose bot died. Default 5s.
	SweepInterval time.Duration
}

// Bot is a running Slack front end.
type Bot struct {
	o   Options
	cfg *config.Config
	log *slog.Logger
	api *slack.Client
	sm  *socketmode.Client
	dir *directory

	// work runs plans and applies; it outlives Run's context by up to
	// ShutdownGrace so a running apply is never cut off without an interrupt.
	workCtx    context.Context
	stopWork   context.CancelFunc
	work       sync.WaitGroup
	teamID     string
	botUserID  string
	progressIn time.Duration // how often apply progress is posted
	instance   string        // this process, in the record of who minted what
	// shownLeft is the minutes left each active grant's announcement shows.
	shownMu   sync.Mutex
	shownLeft map[string]int
}

// New returns a Bot; Run connects it.
func New(o Options) (*Bot, error) {
	if o.Config == nil || o.Store == nil || o.Grants == nil || o.Locks == nil || o.Runner == nil || o.Target == nil || o.Dedup == nil ||
		o.Promos == nil || o.Audit == nil || o.History == nil {
		return nil, errors.New("bot: Config, Store, Grants, Locks, Runner, Target, Dedup, Promos, Audit and History are required")
	}
	if (o.GitHub == nil) != (o.GitHubState == nil) {
		return nil, errors.New("bot: GitHub and GitHubState go together")
	}
	if o.BotToken == "" || o.AppToken == "" {
		return nil, errors.New("bot: Slack bot and app tokens are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.GroupTTL <= 0 || o.GroupTTL > time.Minute {
		o.GroupTTL = time.Minute
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 2 * time.Minute
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
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
	api := slack.New(o.BotToken.Reveal(),
		slack.OptionAPIURL(o.Config.Slack.APIURL),
		slack.OptionAppLevelToken(o.AppToken.Reveal()))
	sm := socketmode.New(api, socketmode.OptionLog(slogOutput{o.Logger}))
	b := &Bot{
		o: o, cfg: o.Config, log: o.Logger, api: api, sm: sm,
		dir:        newDirectory(api, o.GroupTTL, o.Now),
		progressIn: 2 * time.Second,
		instance:   instanceName(),
		shownLeft:  map[string]int{},
	}
	b.workCtx, b.stopWork = context.WithCancel(context.Background())
	return b, nil
}

// Run connects to Slack and handles envelopes until ctx ends, then waits for
// running work (interrupting it after ShutdownGrace) and returns.
func (b *Bot) Run(ctx context.Context) error {
	defer b.drain()
	auth, err := b.api.AuthTestContext(ctx)
	if err != nil {
		return fmt.Errorf("slack auth.test: %w", err)
	}
	b.teamID, b.botUserID = auth.TeamID, auth.UserID
	if want := b.cfg.Slack.TeamID; want != "" && want != auth.TeamID {
		return fmt.Errorf("slack: the bot token belongs to team %s, config expects %s", auth.TeamID, want)
	}
	b.log.Info("connected to slack", "team", auth.TeamID, "bot_user", auth.UserID)
	_ = b.record(ctx, audit.ConfigLoaded, "", nil, map[string]string{"config_sha256": b.o.ConfigDigest, "team": auth.TeamID})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sockErr := make(chan error, 1)
	go func() { sockErr <- b.sm.RunContext(ctx) }()
	go b.sweeper(ctx)
	if b.o.GitHub != nil {
		go b.githubSyncer(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-sockErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("slack socket mode: %w", err)
		case evt := <-b.sm.Events:
			b.dispatch(evt)
		}
	}
}

// dispatch acknowledges an envelope at once and handles it in the background.
func (b *Bot) dispatch(evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slack.SlashCommand)
		if !ok || evt.Request == nil {
			return
		}
		b.ack(evt.Request)
		id := evt.Request.EnvelopeID
		b.background(func(ctx context.Context) { b.handleCommand(ctx, id, cmd) })
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slack.InteractionCallback)
		if !ok || evt.Request == nil {
			return
		}
		if cb.Type == slack.InteractionTypeViewSubmission {
			req := *evt.Request
			b.background(func(ctx context.Context) { b.handleSubmission(ctx, req, cb) })
			return
		}
		b.ack(evt.Request)
		id := evt.Request.EnvelopeID
		b.background(func(ctx context.Context) { b.handleInteraction(ctx, id, cb) })
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			b.ack(evt.Request)
		}
	case socketmode.EventTypeConnected:
		b.log.Info("socket mode connected")
	case socketmode.EventTypeConnectionError, socketmode.EventTypeIncomingError, socketmode.EventTypeErrorBadMessage:
		b.log.Warn("socket mode trouble", "type", string(evt.Type), "data", fmt.Sprint(evt.Data))
	}
}

// handleSubmission checks a modal's submission within Slack's three
// seconds, acknowledges it — with the form's errors, if any — and then does
// the work.
func (b *Bot) handleSubmission(ctx context.Context, req socketmode.Request, cb slack.InteractionCallback) {
	check, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	errs, work := b.viewSubmitted(check, cb)
	cancel()
	if len(errs) > 0 || work == nil {
		if len(errs) == 0 {
			errs = map[string]string{fieldEnv: "twokey cannot take this form."}
		}
		if err := b.sm.Ack(req, slack.NewErrorsViewSubmissionResponse(errs)); err != nil {
			b.log.Error("ack view submission", "envelope", req.EnvelopeID, "err", err)
		}
		return
	}
	b.ack(&req)
	if !b.firstTime(ctx, "envelope:"+req.EnvelopeID, "", cb.User.ID) {
		return
	}
	work(ctx)
}

func (b *Bot) ack(req *socketmode.Request) {
	if err := b.sm.Ack(*req); err != nil {
		b.log.Error("ack envelope", "envelope", req.EnvelopeID, "err", err)
	}
}

// background runs fn on the work context, tracked for shutdown.
func (b *Bot) background(fn func(ctx context.Context)) {
	b.work.Add(1)
	go func() {
		defer b.work.Done()
		fn(b.workCtx)
	}()
}

// drain waits for running work; after ShutdownGrace it cancels the work
// context, which interrupts terraform (SIGINT) and waits for it to stop.
func (b *Bot) drain() {
	done := make(chan struct{})
	go func() {
		b.work.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(b.o.ShutdownGrace):
		b.log.Warn("shutdown grace over; interrupting running work", "grace", b.o.ShutdownGrace)
		b.stopWork()
		<-done
	}
	b.stopWork()
}

func instanceName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("serve@%s-%d", host, os.Getpid())
}

// slogOutput adapts slog to slack-go's logger.
type slogOutput struct{ l *slog.Logger }

func (s slogOutput) Output(_ int, msg string) error {
	s.l.Debug(msg, "component", "socketmode")
	return nil
}
