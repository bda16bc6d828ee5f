package bot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/runner"
)

// The Bot is the change service's Notifier.
var _ change.Notifier = (*Bot)(nil)

// ShowPlan posts a plan's message, or re-renders it.
func (b *Bot) ShowPlan(ctx context.Context, p approvals.Plan) (change.Posted, error) {
	text, blocks := b.planMessage(p)
	if p.MessageTS != "" {
		return change.Posted{Thread: change.Thread{Channel: p.Channel, TS: p.MessageTS}, Permalink: p.Permalink},
			b.edit(ctx, p.Channel, p.MessageTS, text, blocks)
	}
	if p.Status == approvals.StatusPlanning {
		text = fmt.Sprintf("planning %s for %s (%s) …", p.Env, change.Label(p), change.Short(p.SHA))
	}
	return b.post(ctx, p.Channel, text, blocks, "plan_id", p.ID)
}

// ShowGrant posts a grant's announcement, or re-renders it.
func (b *Bot) ShowGrant(ctx context.Context, g approvals.BreakGlass) (change.Posted, error) {
	text, blocks := b.grantMessage(g)
	if g.MessageTS != "" {
		return change.Posted{Thread: change.Thread{Channel: g.Channel, TS: g.MessageTS}, Permalink: g.Permalink},
			b.edit(ctx, g.Channel, g.MessageTS, text, blocks)
	}
	return b.post(ctx, g.Channel, text, blocks, "grant", g.ID)
}

// post posts a new message and finds its permalink.
func (b *Bot) post(ctx context.Context, channel, text string, blocks []slack.Block, attrs ...any) (change.Posted, error) {
	_, ts, err := b.api.PostMessageContext(ctx, channel, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	if notInChannel(err) {
		return change.Posted{}, &NotInChannelError{Channel: channel, Err: err}
	}
	if err != nil {
		return change.Posted{}, err
	}
	link, err := b.api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: channel, Ts: ts})
	if err != nil {
		b.log.Warn("no permalink for a message", append(attrs, "err", err)...)
	}
	return change.Posted{Thread: change.Thread{Channel: channel, TS: ts}, Permalink: link}, nil
}

// edit replaces the message at ts.
func (b *Bot) edit(ctx context.Context, channel, ts, text string, blocks []slack.Block) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, _, _, err := b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	return err
}

// Note writes in a thread, or in the channel when t has no TS.
func (b *Bot) Note(ctx context.Context, t change.Thread, text string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	opts := []slack.MsgOption{slack.MsgOptionText(change.Clip(text, change.MaxSection), false)}
	if t.TS != "" {
		opts = append(opts, slack.MsgOptionTS(t.TS))
	}
	_, _, err := b.api.PostMessageContext(ctx, t.Channel, opts...)
	return err
}

// Attach puts text in a thread as a file.
func (b *Bot) Attach(ctx context.Context, t change.Thread, name, title, text string) {
	if strings.TrimSpace(text) == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := b.api.UploadFileContext(ctx, slack.UploadFileParameters{
		Content: text, FileSize: len(text), Filename: name, Title: title, Channel: t.Channel, ThreadTimestamp: t.TS,
	}); err != nil {
		b.log.Error("upload file", "name", name, "err", err)
	}
}

// Tell posts an ephemeral message to one user. Where the bot is not a
// member of the channel, it answers through the response_url of the user's
// latest command or click there, if it has one.
func (b *Bot) Tell(ctx context.Context, channel, user, text string) {
	_, err := b.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false))
	if err == nil {
		return
	}
	if notInChannel(err) {
		url, ok := b.replies.take(channel, user)
		if !ok {
			b.log.Error("post ephemeral: twokey is not in the channel and has no response_url there", "user", user, "channel", channel, "err", err)
			return
		}
		_, err = b.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false),
			slack.MsgOptionResponseURL(url, slack.ResponseTypeEphemeral))
		if err == nil {
			return
		}
		err = withoutURL(err)
	}
	b.log.Error("post ephemeral", "user", user, "channel", channel, "err", err)
}

// DM writes to user's direct messages with twokey.
func (b *Bot) DM(ctx context.Context, user, text string) error {
	_, _, err := b.dm(ctx, user, slack.MsgOptionText(text, false))
	return err
}

// DeliverToken sends a grant's wrapped token to its requester.
func (b *Bot) DeliverToken(ctx context.Context, g approvals.BreakGlass, w runner.Wrapped) (change.Thread, error) {
	text, blocks := b.tokenMessage(g, w)
	ch, ts, err := b.dm(ctx, g.Requester, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...))
	return change.Thread{Channel: ch, TS: ts}, err
}

// AskReview posts text in the grant's channel with a Reviewed button.
func (b *Bot) AskReview(ctx context.Context, g approvals.BreakGlass, text string) error {
	review := slack.NewButtonBlockElement(actionBGReview, g.ID, plain("Reviewed…")).WithStyle(slack.StylePrimary)
	_, _, err := b.api.PostMessageContext(ctx, g.Channel, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(
		slack.NewSectionBlock(mrkdwn(text), nil, nil), slack.NewActionBlock("twokey_bg_actions", review)))
	return err
}

// Describe is Notifier's name for describe.
func (b *Bot) Describe(err error) string { return b.describe(err) }
