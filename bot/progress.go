package bot

import (
	"context"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/change"
)

var _ change.Progresser = (*Bot)(nil)

// Progress keeps an apply's progress in one message of the thread: posted
// the first time, edited afterwards (Slack allows about one message per
// second per channel; an edit adds none).
func (b *Bot) Progress(ctx context.Context, t change.Thread, ts, text string) (string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	text = change.Clip(text, change.MaxSection)
	if ts != "" {
		_, _, _, err := b.api.UpdateMessageContext(ctx, t.Channel, ts, slack.MsgOptionText(text, false))
		return ts, err
	}
	opts := []slack.MsgOption{slack.MsgOptionText(text, false)}
	if t.TS != "" {
		opts = append(opts, slack.MsgOptionTS(t.TS))
	}
	_, id, err := b.api.PostMessageContext(ctx, t.Channel, opts...)
	return id, err
}
