package bot

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/change"
)

// actionDriftFix is a drift report's Plan a fix button; its value is
// project/env.
const actionDriftFix = "twokey_drift_fix"

var driftScopeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}/[a-z0-9][a-z0-9_-]{0,62}$`)

var _ change.DriftNotifier = (*Bot)(nil)

// ShowDrift posts a drift report with a Plan a fix button.
func (b *Bot) ShowDrift(ctx context.Context, channel string, r change.DriftReport) (change.Posted, error) {
	text := change.DriftReportWords(r)
	fix := slack.NewButtonBlockElement(actionDriftFix, r.Project+"/"+r.Env, plain("Plan a fix")).WithStyle(slack.StylePrimary)
	blocks := []slack.Block{
		slack.NewSectionBlock(mrkdwn(clip(text, maxSection)), nil, nil),
		slack.NewContextBlock("", mrkdwn(fmt.Sprintf("Plan a fix plans the default branch's head in %s; it then needs approvals like any plan. "+
			"Or change the code to match what is live.", r.Scope))),
		slack.NewActionBlock("twokey_drift", fix),
	}
	return b.post(ctx, channel, text, blocks, "env", r.Project+"/"+r.Env)
}

// planFix starts a plan of the default branch from a drift report.
func (b *Bot) planFix(ctx context.Context, c click) error {
	project, env, _ := strings.Cut(c.id, "/")
	return b.svc.PlanFix(ctx, c.channel, c.user, project, env)
}
