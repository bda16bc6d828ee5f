package bot

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/change"
)

// Action IDs of the plan message's buttons; their value is the plan ID.
const (
	actionApprove  = "twokey_approve"
	actionReject   = "twokey_reject"
	actionOverride = "twokey_override"
)

// planMessage renders a plan's channel message for its current state. The
// buttons appear only while the plan waits for approvals.
func (b *Bot) planMessage(p approvals.Plan) (string, []slack.Block) {
	target := b.o.Scope(p.Project, p.Env)
	what := label(p)
	pr := what
	if p.URL != "" {
		pr = fmt.Sprintf("<%s|%s>", p.URL, what)
	}
	title := ""
	if p.Title != "" {
		title = " — " + escape(p.Title)
	}
	fallback := fmt.Sprintf("%s %s for %s (%s): %s", change.StatusIcon(p.Status), target, what, short(p.SHA), statusWords(p.Status))

	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(clip(fmt.Sprintf("%s %s · %s", change.PlanIcon(p), target, what), 140))),
		slack.NewSectionBlock(mrkdwn(clip(fmt.Sprintf("*%s*: %s%s at `%s`, requested by <@%s>",
			change.StatusHeadline(p), pr, title, short(p.SHA), p.Requester), maxSection)), nil, nil),
	}
	previewing := p.Status == approvals.StatusPlanning && p.Preview != nil
	if p.Status == approvals.StatusPlanning && !previewing {
		return fallback, blocks
	}
	if p.Digest != "" || previewing {
		s := p.Summary
		if previewing {
			s = *p.Preview
		}
		blocks = append(blocks, slack.NewSectionBlock(nil, []*slack.TextBlockObject{
			mrkdwn(fmt.Sprintf("*To add*\n%d", s.Add)),
			mrkdwn(fmt.Sprintf("*To change*\n%d", s.Change)),
			mrkdwn(fmt.Sprintf("*To destroy*\n%d", s.Destroy)),
			mrkdwn(fmt.Sprintf("*Approvals*\n%d of %d", len(approvals.Approvers(p)), p.Required)),
		}, nil))
		if all := s.Counts(); s.Replace+s.Move+s.Forget+s.Import+s.Outputs > 0 {
			blocks = append(blocks, slack.NewContextBlock("", mrkdwn("All changes: `"+all+"`")))
		}
		if len(s.Resources) > 0 {
			blocks = append(blocks, slack.NewSectionBlock(mrkdwn(resourceList(s.Resources)), nil, nil))
		}
		if line := change.PolicySummary(p); line != "" && !previewing {
			blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(line, maxSection)), nil, nil))
		}
		if previewing {
			blocks = append(blocks, slack.NewContextBlock("", mrkdwn(":hourglass_flowing_sand: terraform plan is done; "+
				"twokey is reading the saved plan back for its policy checks and risks. An Approve now waits for them, and counts if they hold nothing more.")))
		}
	}
	if len(p.Unmet) > 0 && (p.Status == approvals.StatusPending || p.Status == approvals.StatusPlanning) {
		var b strings.Builder
		b.WriteString(":no_entry: *GitHub requirements not met*; Approve waits for them:")
		for _, u := range p.Unmet {
			b.WriteString("\n• " + escape(u))
		}
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(b.String(), maxSection)), nil, nil))
	}
	if line := approvalLine(p); line != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(line), nil, nil))
	}
	if line := change.Outcome(p); line != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(line, maxSection)), nil, nil))
	}
	ctx := fmt.Sprintf("plan `%s` · fence %d", p.ID, p.Fence)
	if p.Digest != "" {
		ctx += fmt.Sprintf(" · sha256 `%s`", p.Digest[:12])
	}
	if p.Status == approvals.StatusPending {
		ctx += " · expires " + p.ExpiresAt.UTC().Format("Jan 2 15:04 MST")
	}
	if b.o.Unsandboxed {
		ctx += " · :warning: *unsandboxed*: the pull request's code ran as twokey's own user"
	}
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(ctx)))
	if previewing {
		// Reject ends it at once; an Approve waits for the saved plan, and
		// counts if that bears out what was shown.
		// The button says what it was shown on: the service decides the
		// click on that, not on what the store holds by then.
		approve := slack.NewButtonBlockElement(actionApprove, p.ID+":"+p.Preview.Tag(), plain("Approve")).WithStyle(slack.StylePrimary)
		if c := approveConfirm(p.Preview.Destroyed(), p.Protected, target); c != nil {
			approve = approve.WithConfirm(c)
		}
		blocks = append(blocks, slack.NewActionBlock("twokey_actions", approve,
			slack.NewButtonBlockElement(actionReject, p.ID, plain("Reject")).WithStyle(slack.StyleDanger)))
	}
	if p.Status == approvals.StatusPending {
		approve := slack.NewButtonBlockElement(actionApprove, p.ID, plain("Approve")).WithStyle(slack.StylePrimary)
		if c := approveConfirm(p.Policy.Destroyed(), p.Protected, target); c != nil {
			approve = approve.WithConfirm(c)
		}
		reject := slack.NewButtonBlockElement(actionReject, p.ID, plain("Reject")).WithStyle(slack.StyleDanger)
		buttons := []slack.BlockElement{approve, reject}
		if !approvals.Overridden(p) && p.OverridesRequired > 0 {
			override := slack.NewButtonBlockElement(actionOverride, p.ID, plain("Override policy")).WithConfirm(
				slack.NewConfirmationBlockObject(plain("Override the policy denial?"),
					mrkdwn(clip("Policy denied this plan ("+fmt.Sprint(len(p.Policy.Denied))+" rule(s); the thread lists them). "+
						"Your override is recorded with your name, and the plan still needs its approvals.", 300)),
					plain("Override"), plain("Cancel")).WithStyle(slack.StyleDanger))
			buttons = append(buttons, override)
		}
		blocks = append(blocks, slack.NewActionBlock("twokey_actions", buttons...))
	}
	return fallback, blocks
}

// approveConfirm is the dialog Approve opens on a plan that destroys or
// replaces gone, or in a protected environment; nil otherwise.
func approveConfirm(gone []string, protected bool, target string) *slack.ConfirmationBlockObject {
	if len(gone) == 0 && !protected {
		return nil
	}
	text := fmt.Sprintf("You are approving a change to *%s*, a protected environment.", escape(target))
	if len(gone) > 0 {
		list := strings.Join(gone[:min(len(gone), 5)], "`, `")
		if len(gone) > 5 {
			list += fmt.Sprintf("` and %d more", len(gone)-5)
		} else {
			list += "`"
		}
		text = fmt.Sprintf("This plan *destroys or replaces* in %s: `%s.", escape(target), list)
	}
	c := slack.NewConfirmationBlockObject(plain("Approve this plan?"), mrkdwn(clip(text, 300)), plain("Approve"), plain("Cancel"))
	if len(gone) > 0 {
		c = c.WithStyle(slack.StyleDanger)
	}
	return c
}

func approvalLine(p approvals.Plan) string {
	users := approvals.Approvers(p)
	var names []string
	for _, u := range users {
		names = append(names, "<@"+u+">")
	}
	simple := approvals.Overridden(p) && len(approvals.MissingGroups(p)) == 0
	switch {
	case len(users) == 0 && p.Status == approvals.StatusPending && simple:
		return fmt.Sprintf("Needs %d approvals from authorized people other than <@%s>.", p.Required, p.Requester)
	case len(users) == 0 && p.Status == approvals.StatusPending:
		return fmt.Sprintf("Needs %s, from authorized people other than <@%s>.", change.Needs(p), p.Requester)
	case len(users) == 0:
		return ""
	case p.Status == approvals.StatusPending && approvals.Missing(p) > 0 && simple:
		return fmt.Sprintf("Approved by %s — %d more needed.", strings.Join(names, ", "), approvals.Missing(p))
	case p.Status == approvals.StatusPending && !approvals.HasQuorum(p):
		return fmt.Sprintf("Approved by %s — needs %s.", strings.Join(names, ", "), change.Needs(p))
	default:
		return "Approved by " + strings.Join(names, ", ") + "."
	}
}

func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

// The words of plans and grants are the service's (change/words.go).
func clip(s string, n int) string                 { return change.Clip(s, n) }
func short(sha string) string                     { return change.Short(sha) }
func escape(s string) string                      { return change.Escape(s) }
func ago(now, t time.Time) string                 { return change.Ago(now, t) }
func human(d time.Duration) string                { return change.Human(d) }
func label(p approvals.Plan) string               { return change.Label(p) }
func mentions(users []string) string              { return change.Mentions(users) }
func statusWords(s approvals.Status) string       { return change.StatusWords(s) }
func grantWords(g approvals.BreakGlass) string    { return change.GrantWords(g) }
func expiresIn(now, t time.Time) string           { return change.ExpiresIn(now, t) }
func resourceList(rs []approvals.Resource) string { return change.ResourceList(rs) }

const maxSection = change.MaxSection
