package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/change"
)

// dm posts to user's direct messages with twokey.
func (b *Bot) dm(ctx context.Context, user string, opts ...slack.MsgOption) (channel, ts string, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ch, _, _, err := b.api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{user}, ReturnIM: true})
	if err != nil {
		return "", "", fmt.Errorf("open a DM with %s: %w", user, err)
	}
	_, ts, err = b.api.PostMessageContext(ctx, ch.ID, opts...)
	if err != nil {
		return "", "", fmt.Errorf("post a DM to %s: %w", user, err)
	}
	return ch.ID, ts, nil
}

// dmText tells user something in their DMs; a failure is only logged.
func (b *Bot) dmText(ctx context.Context, user, text string) {
	if _, _, err := b.dm(ctx, user, slack.MsgOptionText(text, false)); err != nil {
		b.log.Error("direct message", "user", user, "err", err)
	}
}

// viewSubmitted checks a submitted break-glass modal before it is
// acknowledged: problems go back into the form, by block ID, and the
// modal stays open. Otherwise it returns the work to do once Slack has
// its acknowledgement.
func (b *Bot) viewSubmitted(ctx context.Context, cb slack.InteractionCallback) (map[string]string, func(context.Context)) {
	user := cb.User.ID
	if !slackID.MatchString(user) || !b.ours(cb.Team.ID, cb.Enterprise.ID) {
		return map[string]string{}, nil
	}
	values := cb.View.State.Values
	value := func(field string) string {
		a := values[field][field]
		if a.SelectedOption.Value != "" {
			return a.SelectedOption.Value
		}
		return strings.TrimSpace(a.Value)
	}
	switch cb.View.CallbackID {
	case viewBGRequest:
		channel := cb.View.PrivateMetadata
		project, env, _ := strings.Cut(value(fieldEnv), "/")
		r := change.GrantRequest{Project: project, Env: env, Reason: value(fieldReason), Incident: value(fieldIncident)}
		d, err := time.ParseDuration(value(fieldDuration))
		if err != nil || d < time.Minute {
			return map[string]string{fieldDuration: "Write a duration of at least 1m, like 30m or 1h."}, nil
		}
		r.Duration = d
		if r.Incident != "" && !strings.HasPrefix(r.Incident, "https://") {
			return map[string]string{fieldIncident: "An https:// link, or nothing."}, nil
		}
		if err := b.svc.CheckGrantRequest(ctx, user, r); err != nil {
			var ce *change.CapError
			field := fieldEnv
			switch {
			case errors.As(err, &ce):
				field = fieldDuration
			case errors.Is(err, change.ErrNoReason):
				field = fieldReason
			}
			return map[string]string{field: clip(b.describe(err), 140)}, nil
		}
		return nil, func(ctx context.Context) {
			if err := b.svc.RequestGrant(ctx, channel, user, r); err != nil {
				b.failDM(ctx, channel, user, err)
			}
		}
	case viewBGReview:
		id, channel, _ := strings.Cut(cb.View.PrivateMetadata, " ")
		note := value(fieldNote)
		return nil, func(ctx context.Context) {
			if err := b.svc.Review(ctx, user, id, note); err != nil {
				b.failDM(ctx, channel, user, err)
			}
		}
	}
	return map[string]string{}, nil
}

// failDM tells user what went wrong, in channel if there is one, or else
// in their DMs.
func (b *Bot) failDM(ctx context.Context, channel, user string, err error) {
	if channel != "" {
		b.fail(ctx, channel, user, err, "user", user)
		return
	}
	b.dmText(ctx, user, b.describe(err, "user", user))
}
