package bot

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/commands"
)

func (b *Bot) handleCommand(ctx context.Context, envelope string, c slack.SlashCommand) {
	log := b.log.With("user", c.UserID, "channel", c.ChannelID)
	b.replies.remember(c.ChannelID, c.UserID, c.ResponseURL)
	if !b.svc.First(ctx, "envelope:"+envelope, c.ChannelID, c.UserID) {
		return
	}
	log.Info("command", "text", clip(c.Text, 200))
	b.svc.Command(ctx, c.UserID, c.ChannelID, c.TeamID, c.Text)
	if !b.ours(c.TeamID, c.EnterpriseID) {
		b.fail(ctx, c.ChannelID, c.UserID, errOtherWorkspace)
		return
	}
	cmd, err := commands.Parse(c.Text)
	if err == nil {
		switch cmd := cmd.(type) {
		case commands.Help:
			b.tell(ctx, c.ChannelID, c.UserID, commands.Usage)
		case commands.Link:
			err = b.svc.Link(ctx, c.ChannelID, c.UserID)
		case commands.WhoAmI:
			err = b.svc.WhoAmI(ctx, c.ChannelID, c.UserID)
		case commands.Unlink:
			err = b.svc.Unlink(ctx, c.ChannelID, c.UserID, cmd.User)
		case commands.Status:
			err = b.svc.Status(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Plan:
			err = b.svc.Plan(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Unlock:
			err = b.svc.Unlock(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Drift:
			err = b.svc.Drift(ctx, c.ChannelID, c.UserID, cmd)
		case commands.History:
			err = b.svc.History(ctx, c.ChannelID, c.UserID, cmd)
		case commands.Show:
			err = b.svc.Show(ctx, c.ChannelID, c.UserID, cmd)
		case commands.BreakGlass:
			err = b.svc.BreakGlass(ctx, c.ChannelID, c.UserID, cmd)
		case commands.BreakGlassForm:
			if _, verr := b.api.OpenViewContext(ctx, c.TriggerID, b.requestModal(c.ChannelID)); verr != nil {
				err = fmt.Errorf("open the break-glass form: %w", verr)
			}
		case commands.BreakGlassRevoke:
			err = b.svc.RevokeGrant(ctx, c.ChannelID, c.UserID, cmd)
		}
	}
	if err != nil {
		b.svc.Refused(err)
		b.fail(ctx, c.ChannelID, c.UserID, err, "user", c.UserID)
	}
}

// click is a button press, decoded and checked. id is the plan's or, for a
// break-glass button, the grant's.
type click struct {
	user, team, enterprise, channel string
	action, id, trigger             string
}

var (
	planIDRE  = change.PlanIDRE
	grantIDRE = change.GrantIDRE
	// previewRE is an Approve button's value: the plan ID, and on a
	// preview the tag of the summary it showed (approvals.Summary.Tag).
	previewRE = regexp.MustCompile(strings.TrimSuffix(change.PlanIDRE.String(), "$") + `(:[0-9a-f]{64})?$`)
	slackID   = regexp.MustCompile(`^[A-Z0-9]{2,32}$`)
)

// buttons maps each action to the IDs its value must be.
var buttons = map[string]*regexp.Regexp{
	actionApprove: previewRE, actionReject: planIDRE, actionOverride: planIDRE, actionDriftFix: driftScopeRE,
	actionBGApprove: grantIDRE, actionBGDeny: grantIDRE, actionBGReview: grantIDRE, actionBGUnwrapFailed: grantIDRE,
}

// clickOf decodes a block_actions payload into the one button press twokey
// acts on. Anything else — other interaction types, several actions,
// unknown buttons, malformed IDs — is refused.
func clickOf(cb slack.InteractionCallback) (click, error) {
	if cb.Type != slack.InteractionTypeBlockActions {
		return click{}, fmt.Errorf("%w: interaction type %q", errUnknownAction, cb.Type)
	}
	if len(cb.ActionCallback.BlockActions) != 1 || cb.ActionCallback.BlockActions[0] == nil {
		return click{}, fmt.Errorf("%w: %d actions", errUnknownAction, len(cb.ActionCallback.BlockActions))
	}
	a := cb.ActionCallback.BlockActions[0]
	c := click{user: cb.User.ID, team: cb.Team.ID, enterprise: cb.Enterprise.ID, channel: cb.Channel.ID,
		action: a.ActionID, id: a.Value, trigger: cb.TriggerID}
	if c.channel == "" {
		c.channel = cb.Container.ChannelID
	}
	// On Enterprise Grid a user's team is their organization (E…), the
	// one the payload names; ours then checks it is the configured one.
	if u := cb.User.TeamID; u != "" && u != c.team && (c.enterprise == "" || u != c.enterprise) {
		return click{}, errOtherWorkspace
	}
	idRE, known := buttons[c.action]
	switch {
	case !known:
		return click{}, fmt.Errorf("%w: %q", errUnknownAction, clip(c.action, 40))
	case !idRE.MatchString(c.id):
		return click{}, fmt.Errorf("%w: %q on %q", errUnknownAction, clip(c.id, 40), c.action)
	case !slackID.MatchString(c.user), !slackID.MatchString(c.channel), !slackID.MatchString(c.team):
		return click{}, fmt.Errorf("%w: malformed user, channel or team", errUnknownAction)
	}
	return c, nil
}

func (b *Bot) handleInteraction(ctx context.Context, envelope string, cb slack.InteractionCallback) {
	if cb.Type != slack.InteractionTypeBlockActions {
		return
	}
	c, err := clickOf(cb)
	if err != nil {
		b.log.Warn("refused interaction", "user", cb.User.ID, "err", err)
		if cb.User.ID != "" && cb.Channel.ID != "" {
			b.fail(ctx, cb.Channel.ID, cb.User.ID, err)
		}
		return
	}
	b.replies.remember(c.channel, c.user, cb.ResponseURL)
	if !b.svc.First(ctx, "envelope:"+envelope, c.channel, c.user) {
		return
	}
	if !b.ours(c.team, c.enterprise) {
		b.fail(ctx, c.channel, c.user, errOtherWorkspace)
		return
	}
	switch c.action {
	case actionApprove:
		if id, seen, preview := strings.Cut(c.id, ":"); preview {
			err = b.svc.ApprovePreview(ctx, c.channel, c.user, id, seen)
		} else {
			err = b.svc.Approve(ctx, c.channel, c.user, c.id)
		}
	case actionReject:
		err = b.svc.Reject(ctx, c.channel, c.user, c.id)
	case actionOverride:
		err = b.svc.Override(ctx, c.channel, c.user, c.id)
	case actionDriftFix:
		err = b.planFix(ctx, c)
	case actionBGApprove:
		err = b.svc.ApproveGrant(ctx, c.channel, c.user, c.id)
	case actionBGDeny:
		err = b.svc.DenyGrant(ctx, c.channel, c.user, c.id)
	case actionBGReview:
		err = b.openReview(ctx, c)
	case actionBGUnwrapFailed:
		err = b.svc.UnwrapFailed(ctx, c.channel, c.user, c.id)
	}
	if err != nil {
		b.svc.Refused(err)
		b.fail(ctx, c.channel, c.user, err, "user", c.user, "id", c.id, "action", c.action)
	}
}

// ours reports whether a command or click comes from the configured
// workspace (and Enterprise Grid organization, if one is configured).
func (b *Bot) ours(team, enterprise string) bool {
	want := b.o.TeamID
	if want == "" {
		want = b.teamID
	}
	if team != want {
		return false
	}
	return b.o.EnterpriseID == "" || enterprise == b.o.EnterpriseID
}

// openReview answers a Reviewed click with the review form, if the service
// says the user may review the grant.
func (b *Bot) openReview(ctx context.Context, c click) error {
	g, err := b.svc.MayReview(ctx, c.user, c.id)
	if err != nil {
		return err
	}
	if _, err := b.api.OpenViewContext(ctx, c.trigger, b.reviewModal(g, c.channel)); err != nil {
		return fmt.Errorf("open the review form: %w", err)
	}
	return nil
}
