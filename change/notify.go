package change

import (
	"context"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// Thread is where the conversation about a plan or a grant happens: the
// message that shows it. An empty TS is the channel itself.
type Thread struct{ Channel, TS string }

// Posted is a message a Notifier posted: its thread and a link to it.
type Posted struct {
	Thread
	Permalink string
}

// Notifier is how the service reports what happened; a front end (bot,
// for Slack) implements it, in its own words and layout. The service
// decides; the Notifier only shows.
type Notifier interface {
	// ShowPlan posts the message of a plan that has none (p.MessageTS is
	// empty), or re-renders the one it has.
	ShowPlan(ctx context.Context, p approvals.Plan) (Posted, error)
	// ShowGrant does the same for a break-glass grant's announcement.
	ShowGrant(ctx context.Context, g approvals.BreakGlass) (Posted, error)
	// Note writes text in a thread (or, with no TS, in the channel);
	// Attach puts a long text there as a file.
	Note(ctx context.Context, t Thread, text string) error
	Attach(ctx context.Context, t Thread, name, title, text string)
	// Tell shows text to one user only, where they are.
	Tell(ctx context.Context, channel, user, text string)
	// DM writes to a user directly; DeliverToken sends a grant's wrapped
	// token there and says where.
	DM(ctx context.Context, user, text string) error
	DeliverToken(ctx context.Context, g approvals.BreakGlass, w runner.Wrapped) (Thread, error)
	// AskReview asks the grant's channel to review an ended grant.
	AskReview(ctx context.Context, g approvals.BreakGlass, text string) error
	// Describe says an error in the front end's words: the one place
	// errors become text.
	Describe(err error) string
}

// threadOf is where a plan's conversation happens.
func threadOf(p approvals.Plan) Thread { return Thread{Channel: p.Channel, TS: p.MessageTS} }

// grantThread is where a grant's conversation happens.
func grantThread(g approvals.BreakGlass) Thread { return Thread{Channel: g.Channel, TS: g.MessageTS} }

// tell shows text to one user.
func (s *Service) tell(ctx context.Context, channel, user, text string) {
	s.n.Tell(ctx, channel, user, text)
}

// fail tells user what went wrong, in the front end's words.
func (s *Service) fail(ctx context.Context, channel, user string, err error, attrs ...any) {
	s.log.Debug("refused", append(attrs, "user", user, "err", err)...)
	s.Refused(err)
	s.n.Tell(ctx, channel, user, s.n.Describe(err))
}

// dmText tells user something directly; a failure is only logged.
func (s *Service) dmText(ctx context.Context, user, text string) {
	if err := s.n.DM(ctx, user, text); err != nil {
		s.log.Error("direct message", "user", user, "err", err)
	}
}

// attach puts text in a thread as a file, redacted of every credential
// value the runner knows; nothing without a thread.
func (s *Service) attach(ctx context.Context, t Thread, name, title, text string) {
	if t.TS == "" {
		return
	}
	s.n.Attach(ctx, t, name, title, runner.Redact(text))
}
