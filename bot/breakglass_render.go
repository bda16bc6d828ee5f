package bot

import (
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/runner"
)

// Action IDs of break-glass buttons (their value is the grant ID), and the
// callback IDs of the break-glass modals.
const (
	actionBGApprove      = "twokey_bg_approve"
	actionBGDeny         = "twokey_bg_deny"
	actionBGReview       = "twokey_bg_review"
	actionBGUnwrapFailed = "twokey_bg_unwrap_failed"

	viewBGRequest = "twokey_bg_request"
	viewBGReview  = "twokey_bg_review"
)

// Block and action IDs of the modals' inputs.
const (
	fieldEnv      = "bg_env"
	fieldDuration = "bg_duration"
	fieldReason   = "bg_reason"
	fieldIncident = "bg_incident"
	fieldNote     = "bg_note"
)

// grantMessage renders a grant's announcement in the security channel.
func (b *Bot) grantMessage(g approvals.BreakGlass) (string, []slack.Block) {
	now := b.o.Now()
	target := b.o.Scope(g.Project, g.Env)
	fallback := fmt.Sprintf("Break-glass %s in %s by %s: %s", g.ID, target, g.Requester, grantWords(g))
	intro := fmt.Sprintf("<@%s> asked for emergency access to *%s* for *%s*:\n>%s", g.Requester, target, human(g.Duration),
		strings.ReplaceAll(escape(g.Reason), "\n", "\n>"))
	if g.Incident != "" {
		intro += fmt.Sprintf("\nIncident: <%s>", g.Incident)
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(clip(fmt.Sprintf("%s Break-glass · %s", change.GrantIcon(g), target), 140))),
		slack.NewSectionBlock(mrkdwn(clip(intro, maxSection)), nil, nil),
	}
	approver := "—"
	switch {
	case g.Approver != "":
		approver = "<@" + g.Approver + ">"
	case g.Required == 0:
		approver = "self-service"
	case g.Status == approvals.GrantRequested:
		approver = "waiting for one"
	}
	token := "—"
	switch {
	case g.Status == approvals.GrantActive:
		token = fmt.Sprintf(":hourglass_flowing_sand: %s left, until %s", human(time.Duration(change.MinutesLeft(g, now))*time.Minute),
			g.ExpiresAt.UTC().Format("15:04 MST"))
	case g.HadToken():
		token = "gone since " + g.EndedAt.UTC().Format("Jan 2 15:04 MST")
	}
	fields := []*slack.TextBlockObject{
		mrkdwn("*Status*\n" + grantWords(g)),
		mrkdwn("*Approved by*\n" + approver),
		mrkdwn("*Token*\n" + token),
		mrkdwn("*Policies*\n" + strings.Join(g.Policies, ", ")),
	}
	if g.HadToken() && g.Status == approvals.GrantEnded {
		fields = append(fields, mrkdwn(fmt.Sprintf("*Reviews*\n%d of %d", len(g.Reviews), approvals.ReviewsNeeded)))
	}
	blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	if g.Note != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(change.EndedWords(g), maxSection)), nil, nil))
	}
	if line := change.DriftWords(g); line != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(line, maxSection)), nil, nil))
	}
	if len(g.Reviews) > 0 {
		var lines []string
		for _, r := range g.Reviews {
			line := fmt.Sprintf(":eyes: <@%s> %s", r.User, r.At.UTC().Format("Jan 2 15:04 MST"))
			if r.Note != "" {
				line += ": " + escape(r.Note)
			}
			lines = append(lines, line)
		}
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn(clip(strings.Join(lines, "\n"), maxSection)), nil, nil))
	}
	ctx := fmt.Sprintf("grant `%s` · requested %s", g.ID, g.CreatedAt.UTC().Format("Jan 2 15:04 MST"))
	if g.Accessor != "" {
		ctx += " · token accessor `" + g.Accessor + "`"
	}
	ctx += " · `/tf breakglass revoke " + g.ID + "`"
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(ctx)))
	switch {
	case g.Status == approvals.GrantRequested:
		blocks = append(blocks, slack.NewActionBlock("twokey_bg_actions",
			slack.NewButtonBlockElement(actionBGApprove, g.ID, plain("Approve")).WithStyle(slack.StylePrimary),
			slack.NewButtonBlockElement(actionBGDeny, g.ID, plain("Deny")).WithStyle(slack.StyleDanger)))
	case g.Status == approvals.GrantEnded && g.HadToken() && !g.Reviewed():
		blocks = append(blocks, slack.NewActionBlock("twokey_bg_actions",
			slack.NewButtonBlockElement(actionBGReview, g.ID, plain("Reviewed…")).WithStyle(slack.StylePrimary)))
	}
	return fallback, blocks
}

// tokenMessage is the DM that carries the wrapping token: the one message
// twokey ever sends with a credential in it, to the one person it is for.
func (b *Bot) tokenMessage(g approvals.BreakGlass, w runner.Wrapped) (string, []slack.Block) {
	cmd := fmt.Sprintf("VAULT_ADDR=%s vault unwrap %s", b.o.VaultAddress, w.WrapToken)
	text := fmt.Sprintf("Break-glass token %s for %s: unwrap it before %s", g.ID, g.Env, w.WrapExpires.UTC().Format("15:04 MST"))
	return text, []slack.Block{
		slack.NewHeaderBlock(plain(clip("🔑 Break-glass · "+g.Env, 140))),
		slack.NewSectionBlock(mrkdwn(fmt.Sprintf("Your emergency token is wrapped. Unwrap it *once*, before *%s*:\n```%s```",
			w.WrapExpires.UTC().Format("15:04:05 MST"), cmd)), nil, nil),
		slack.NewSectionBlock(mrkdwn(fmt.Sprintf("The token has the policies `%s` and lives until *%s*; it cannot be renewed. "+
			"twokey never saw it, only this single-use wrapping token. Everyone in <#%s> knows about it, and two people review "+
			"what you did once it ends. Bring manual changes back into Terraform.",
			strings.Join(g.Policies, "`, `"), g.ExpiresAt.UTC().Format("15:04 MST"), g.Channel)), nil, nil),
		slack.NewContextBlock("", mrkdwn(fmt.Sprintf("grant `%s` · token accessor `%s` · `/tf breakglass revoke %s` when you are done. "+
			"If `vault unwrap` says the token is invalid although you did not use it, someone else did: press *Unwrap failed*.",
			g.ID, w.Accessor, g.ID))),
		slack.NewActionBlock("twokey_bg_dm", slack.NewButtonBlockElement(actionBGUnwrapFailed, g.ID, plain("Unwrap failed")).
			WithStyle(slack.StyleDanger)),
	}
}

// requestModal is the break-glass form: environment, duration, reason,
// incident link. metadata carries the channel it was opened from.
func (b *Bot) requestModal(channel string) slack.ModalViewRequest {
	var options []*slack.OptionBlockObject
	for _, t := range b.o.BreakGlass {
		options = append(options, slack.NewOptionBlockObject(t.Project+"/"+t.Env,
			plain(fmt.Sprintf("%s (at most %s)", b.o.Scope(t.Project, t.Env), human(t.MaxTTL))), nil))
	}
	env := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, plain("Environment"), fieldEnv, options...)
	duration := slack.NewPlainTextInputBlockElement(plain("30m"), fieldDuration)
	reason := slack.NewPlainTextInputBlockElement(plain("What is on fire, and what you need to do"), fieldReason)
	reason.Multiline, reason.MaxLength = true, 500
	incident := slack.NewPlainTextInputBlockElement(plain("https://…"), fieldIncident)
	incidentBlock := slack.NewInputBlock(fieldIncident, plain("Incident link"), nil, incident)
	incidentBlock.Optional = true
	return slack.ModalViewRequest{
		Type: slack.VTModal, CallbackID: viewBGRequest, PrivateMetadata: channel,
		Title: plain("Break-glass"), Submit: plain("Request"), Close: plain("Cancel"),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewSectionBlock(mrkdwn("Emergency access, when the normal plan → two approvals → apply is too slow. "+
				"Everyone in the security channel sees it, and two people review it afterwards."), nil, nil),
			slack.NewInputBlock(fieldEnv, plain("Environment"), nil, env),
			slack.NewInputBlock(fieldDuration, plain("For how long"), plain("e.g. 30m or 1h; the environment's cap applies"), duration),
			slack.NewInputBlock(fieldReason, plain("Reason"), nil, reason),
			incidentBlock,
		}},
	}
}

// reviewModal is the review form of one grant.
func (b *Bot) reviewModal(g approvals.BreakGlass, channel string) slack.ModalViewRequest {
	note := slack.NewPlainTextInputBlockElement(plain("What was done, and is it back in code?"), fieldNote)
	note.Multiline, note.MaxLength = true, 500
	noteBlock := slack.NewInputBlock(fieldNote, plain("Note"), nil, note)
	noteBlock.Optional = true
	summary := fmt.Sprintf("*<@%s>* had emergency access to *%s* (%s): %s\n%s", g.Requester, g.Env, grantWords(g),
		escape(clip(g.Reason, 500)), change.DriftWords(g))
	return slack.ModalViewRequest{
		Type: slack.VTModal, CallbackID: viewBGReview, PrivateMetadata: g.ID + " " + channel,
		Title: plain("Review break-glass"), Submit: plain("Reviewed"), Close: plain("Cancel"),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewSectionBlock(mrkdwn(clip(summary, maxSection)), nil, nil),
			noteBlock,
		}},
	}
}
