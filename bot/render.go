package bot

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
)

// Action IDs of the plan message's buttons; their value is the plan ID.
const (
	actionApprove = "twokey_approve"
	actionReject  = "twokey_reject"
)

// maxSection leaves room under Slack's 3,000 characters per section.
const maxSection = 2900

// planMessage renders a plan's channel message for its current state. The
// buttons appear only while the plan waits for approvals.
func (b *Bot) planMessage(p approvals.Plan) (string, []slack.Block) {
	target := p.Env
	if len(b.cfg.Projects) > 1 {
		target = p.Project + "/" + p.Env
	}
	what := label(p)
	pr := what
	if p.URL != "" {
		pr = fmt.Sprintf("<%s|%s>", p.URL, what)
	}
	title := ""
	if p.Title != "" {
		title = " — " + escape(p.Title)
	}
	fallback := fmt.Sprintf("%s %s for %s (%s): %s", statusIcon(p.Status), target, what, short(p.SHA), statusWords(p.Status))

	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(clip(fmt.Sprintf("%s %s · %s", statusIcon(p.Status), target, what), 140))),
		slack.NewSectionBlock(mrkdwn(clip(fmt.Sprintf("*%s*: %s%s at `%s`, requested by <@%s>",
			statusHeadline(p), pr, title, short(p.SHA), p.Requester), maxSection)), nil, nil),
	}
	if p.Status == approvals.StatusPlanning {
		return fallback, blocks
	}
	if p.Digest != "" {
		s := p.Summary
		blocks = append(blocks, slack.NewSectionBlock(nil, []*slack.TextBlockObject{
			mrkdwn(fmt.Sprintf("*To add*\n%d", s.Add)),
			mrkdwn(fmt.Sprintf("*To change*\n%d", s.Change)),
			mrkdwn(fmt.Sprintf("*To destroy*\n%d", s.Destroy)),
			mrkdwn(fmt.Sprintf("*Approvals*\n%d of %d", len(approvals.Approvers(p)), p.Required)),
		}, nil))
		if len(s.Resources) > 0 {
			blocks = append(blocks, slack.NewSectionBlock(mrkdwn(resourceList(s.Resources)), nil, nil))
		}
	}
	if line := approvalLine(p); line != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(line), nil, nil))
	}
	if line := outcome(p); line != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(line, maxSection)), nil, nil))
	}
	ctx := fmt.Sprintf("plan `%s` · fence %d", p.ID, p.Fence)
	if p.Digest != "" {
		ctx += fmt.Sprintf(" · sha256 `%s`", p.Digest[:12])
	}
	if p.Status == approvals.StatusPending {
		ctx += " · expires " + p.ExpiresAt.UTC().Format("Jan 2 15:04 MST")
	}
	if b.cfg.Runner.Sandbox.Mode == config.SandboxNone {
		ctx += " · :warning: *unsandboxed*: the pull request's code ran as twokey's own user"
	}
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(ctx)))
	if p.Status == approvals.StatusPending {
		approve := slack.NewButtonBlockElement(actionApprove, p.ID, plain("Approve")).WithStyle(slack.StylePrimary)
		reject := slack.NewButtonBlockElement(actionReject, p.ID, plain("Reject")).WithStyle(slack.StyleDanger)
		blocks = append(blocks, slack.NewActionBlock("twokey_actions", approve, reject))
	}
	return fallback, blocks
}

func statusHeadline(p approvals.Plan) string {
	switch p.Status {
	case approvals.StatusPlanning:
		return "Planning"
	case approvals.StatusPending:
		return "Plan ready for review"
	case approvals.StatusApplying:
		return "Applying"
	case approvals.StatusApplied:
		return "Applied"
	case approvals.StatusFailed:
		return "Apply failed"
	case approvals.StatusPlanFailed:
		return "Plan failed"
	case approvals.StatusNoChanges:
		return "No changes"
	case approvals.StatusRejected:
		return "Rejected"
	case approvals.StatusInvalidated:
		return "Void"
	case approvals.StatusInterrupted:
		return "Interrupted"
	}
	return string(p.Status)
}

func statusIcon(s approvals.Status) string {
	switch s {
	case approvals.StatusPlanning, approvals.StatusApplying:
		return "⏳"
	case approvals.StatusPending:
		return "📝"
	case approvals.StatusApplied, approvals.StatusNoChanges:
		return "✅"
	case approvals.StatusFailed, approvals.StatusPlanFailed, approvals.StatusInterrupted:
		return "❌"
	}
	return "🚫"
}

func approvalLine(p approvals.Plan) string {
	users := approvals.Approvers(p)
	var names []string
	for _, u := range users {
		names = append(names, "<@"+u+">")
	}
	switch {
	case len(users) == 0 && p.Status == approvals.StatusPending:
		return fmt.Sprintf("Needs %d approvals from authorized people other than <@%s>.", p.Required, p.Requester)
	case len(users) == 0:
		return ""
	case p.Status == approvals.StatusPending && approvals.Missing(p) > 0:
		return fmt.Sprintf("Approved by %s — %d more needed.", strings.Join(names, ", "), approvals.Missing(p))
	default:
		return "Approved by " + strings.Join(names, ", ") + "."
	}
}

// outcome says how a finished plan ended, or "" while it is open. Reasons
// are mrkdwn written by the bot, which escapes any user text it puts in them.
func outcome(p approvals.Plan) string {
	switch {
	case !p.Status.Terminal():
		return ""
	case p.Status == approvals.StatusRejected && p.Reason != "":
		return fmt.Sprintf("Rejected by <@%s>: %s", p.Actor, p.Reason)
	case p.Status == approvals.StatusRejected:
		return fmt.Sprintf("Rejected by <@%s>. The environment is free.", p.Actor)
	case p.Status == approvals.StatusApplied:
		return "Result: " + p.Reason
	}
	return p.Reason
}

// resourceList lists changed resources, destroys marked, cut to one section.
func resourceList(rs []approvals.Resource) string {
	var b strings.Builder
	b.WriteString("```")
	for i, r := range rs {
		line := fmt.Sprintf("%s %s%s\n", actionSign(r.Action), r.Address, actionNote(r.Action))
		more := fmt.Sprintf("… and %d more\n", len(rs)-i)
		if b.Len()+len(line)+len(more)+3 > maxSection {
			b.WriteString(more)
			break
		}
		b.WriteString(line)
	}
	b.WriteString("```")
	return b.String()
}

func actionSign(a approvals.Action) string {
	switch a {
	case approvals.ActionCreate:
		return "+"
	case approvals.ActionUpdate:
		return "~"
	case approvals.ActionDelete:
		return "-"
	case approvals.ActionReplace:
		return "-/+"
	}
	return "?"
}

func actionNote(a approvals.Action) string {
	switch a {
	case approvals.ActionDelete:
		return "   ⚠ DESTROY"
	case approvals.ActionReplace:
		return "   ⚠ REPLACE (destroy and create)"
	}
	return ""
}

func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}
func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

// escape makes user-supplied text (PR titles, reasons) safe in mrkdwn.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// expiresIn renders the time left before t.
func expiresIn(now, t time.Time) string {
	if !t.After(now) {
		return "expired"
	}
	return "in " + ago(t, now)
}
