// Package bot is twokey's Slack adapter and the only importer of slack-go.
// It holds a Socket Mode connection, acknowledges every envelope at once,
// drops duplicate deliveries, decodes slash commands, clicks and form
// submissions into the values of package change, which holds the use
// cases, and renders what change reports (Block Kit messages, threads,
// files, direct messages, modals). Errors become text in one place
// (Describe, messages.go).
package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/config/secret"
)

// BreakGlassTarget is an environment the break-glass form offers, with the
// longest access it grants.
type BreakGlassTarget struct {
	Project, Env string
	MaxTTL       time.Duration
}

// Options configure a Bot.
type Options struct {
	// APIURL is Slack's Web API base; "" is slack-go's default.
	APIURL string
	// TeamID is the workspace the bot serves ("": its token's own) and
	// EnterpriseID, on Enterprise Grid, the organization; commands and
	// clicks from anywhere else are refused.
	TeamID, EnterpriseID string
	BotToken, AppToken   secret.Secret
	// Scope names an environment for people: "prod", or "network/prod"
	// where there are several projects. Default project/env.
	Scope func(project, env string) string
	// Unsandboxed marks every plan message: the pull request's code ran as
	// twokey's own user.
	Unsandboxed bool
	// VaultAddress goes into the break-glass unwrap command.
	VaultAddress string
	// BreakGlass are the environments the break-glass form offers.
	BreakGlass []BreakGlassTarget
	// ConfigDigest is recorded when the bot connects (config_loaded).
	ConfigDigest string
	Logger       *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// GroupTTL bounds how long user group membership is cached; at most
	// (and by default) 60s.
	GroupTTL time.Duration
	// HTTPClient, if set, makes the Web API calls (a metrics adapter counts
	// failed ones through its transport). Either way, Slack's 429s are
	// waited out (ratelimit.go).
	HTTPClient *http.Client
}

// Bot is a running Slack front end: it decodes what Slack sends into the
// change service's values, and implements change.Notifier to show what the
// service reports.
type Bot struct {
	o   Options
	log *slog.Logger
	api *slack.Client
	sm  *socketmode.Client
	dir *directory
	svc *change.Service // set by Run

	teamID    string
	botUserID string
	botName   string // how people invite it: /invite @botName
	// replies holds each channel and user's latest response_url, to
	// answer where the bot is not a member (respond.go).
	replies *replies
	// connected is whether the Socket Mode connection is up (readiness).
	connected atomic.Bool
}

// New returns a Bot; Run connects it and hands what it hears to a service.
func New(o Options) (*Bot, error) {
	if o.BotToken == "" || o.AppToken == "" {
		return nil, errors.New("bot: Slack bot and app tokens are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Scope == nil {
		o.Scope = func(project, env string) string { return project + "/" + env }
	}
	if o.GroupTTL <= 0 || o.GroupTTL > time.Minute {
		o.GroupTTL = time.Minute
	}
	opts := []slack.Option{slack.OptionAppLevelToken(o.AppToken.Reveal())}
	if o.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(o.APIURL))
	}
	hc := &http.Client{}
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		hc = &c
	}
	if hc.Transport == nil {
		hc.Transport = http.DefaultTransport
	}
	hc.Transport = &retryTransport{next: hc.Transport, max: MaxRateLimitWait}
	opts = append(opts, slack.OptionHTTPClient(hc))
	api := slack.New(o.BotToken.Reveal(), opts...)
	sm := socketmode.New(api, socketmode.OptionLog(slogOutput{o.Logger}))
	return &Bot{o: o, log: o.Logger, api: api, sm: sm, dir: newDirectory(api, o.GroupTTL, o.Now), botName: "twokey",
		replies: newReplies(o.Now)}, nil
}

// Connected reports whether the Socket Mode connection is up.
func (b *Bot) Connected() bool { return b.connected.Load() }

// Directory is Slack's answer to who is who, for the service.
func (b *Bot) Directory() change.Directory { return b.dir }

// Run connects to Slack and hands each command and click to svc until ctx
// ends. The socket's goroutine is joined before Run returns; the work it
// started belongs to svc, which drains it.
func (b *Bot) Run(ctx context.Context, svc *change.Service) error {
	b.svc = svc
	auth, err := b.api.AuthTestContext(ctx)
	if err != nil {
		return fmt.Errorf("slack auth.test: %w", err)
	}
	b.teamID, b.botUserID = auth.TeamID, auth.UserID
	if auth.User != "" {
		b.botName = auth.User
	}
	if want := b.o.TeamID; want != "" && want != auth.TeamID {
		return fmt.Errorf("slack: the bot token belongs to team %s, config expects %s", auth.TeamID, want)
	}
	b.log.Info("connected to slack", "team", auth.TeamID, "bot_user", auth.UserID)
	svc.Started(ctx, b.o.ConfigDigest, auth.TeamID)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer b.connected.Store(false)
	sockErr := make(chan error, 1)
	go func() { sockErr <- b.sm.RunContext(ctx) }()
	for {
		select {
		case <-ctx.Done():
			<-sockErr
			return nil
		case err := <-sockErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("slack socket mode: %w", err)
		case evt := <-b.sm.Events:
			// Every envelope already here (up to maxAckRun) is acknowledged
			// before the work of any starts: Slack waits for acks, people
			// for the work.
			work := b.dispatch(nil, evt)
			for queued := true; queued && len(work) < maxAckRun; {
				select {
				case evt := <-b.sm.Events:
					work = b.dispatch(work, evt)
				default:
					queued = false
				}
			}
			for _, fn := range work {
				b.background(fn)
			}
		}
	}
}

// maxAckRun bounds how many envelopes' work waits for their acks.
const maxAckRun = 64

// dispatch acknowledges an envelope at once and adds the work it asks for
// to work.
func (b *Bot) dispatch(work []func(context.Context), evt socketmode.Event) []func(context.Context) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slack.SlashCommand)
		if !ok || evt.Request == nil {
			return work
		}
		b.ack(evt.Request)
		id := evt.Request.EnvelopeID
		return append(work, func(ctx context.Context) { b.handleCommand(ctx, id, cmd) })
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slack.InteractionCallback)
		if !ok || evt.Request == nil {
			return work
		}
		if cb.Type == slack.InteractionTypeViewSubmission {
			req := *evt.Request
			return append(work, func(ctx context.Context) { b.handleSubmission(ctx, req, cb) })
		}
		b.ack(evt.Request)
		id := evt.Request.EnvelopeID
		return append(work, func(ctx context.Context) { b.handleInteraction(ctx, id, cb) })
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			b.ack(evt.Request)
		}
	case socketmode.EventTypeConnected:
		b.connected.Store(true)
		b.log.Info("socket mode connected")
	case socketmode.EventTypeConnecting, socketmode.EventTypeDisconnect, socketmode.EventTypeInvalidAuth:
		b.connected.Store(false)
	case socketmode.EventTypeConnectionError, socketmode.EventTypeIncomingError, socketmode.EventTypeErrorBadMessage:
		if evt.Type == socketmode.EventTypeConnectionError {
			b.connected.Store(false)
		}
		b.log.Warn("socket mode trouble", "type", string(evt.Type), "data", fmt.Sprint(evt.Data))
	}
	return work
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
	if !b.svc.First(ctx, "envelope:"+req.EnvelopeID, "", cb.User.ID) {
		return
	}
	work(ctx)
}

func (b *Bot) ack(req *socketmode.Request) {
	if err := b.sm.Ack(*req); err != nil {
		b.log.Error("ack envelope", "envelope", req.EnvelopeID, "err", err)
	}
}

// background hands fn to the service's work, tracked for shutdown.
func (b *Bot) background(fn func(ctx context.Context)) {
	if !b.svc.Go(fn) {
		b.log.Warn("shutting down: an envelope was acknowledged but not acted on")
	}
}

// slogOutput adapts slog to slack-go's logger.
type slogOutput struct{ l *slog.Logger }

func (s slogOutput) Output(_ int, msg string) error {
	s.l.Debug(msg, "component", "socketmode")
	return nil
}
