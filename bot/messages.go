package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/runner"
)

// Errors the bot itself decides.
var (
	errOtherWorkspace = errors.New("twokey does not serve this Slack workspace")
	errUnknownAction  = errors.New("unknown action")
)

// plainErrors are told to the user in their own words.
var plainErrors = []error{errOtherWorkspace, change.ErrNotPlanner, change.ErrMembership, change.ErrNotAdmin, change.ErrStateStore, errUnknownAction,
	change.ErrNoLinking, change.ErrNotAdminLnk, change.ErrLookAgain}

// grantErrors are told to the user in their own words.
var grantErrors = []error{change.ErrNoBreakGlass, change.ErrNotOnCall, change.ErrNoReason, change.ErrNoRevoke, change.ErrNotRequester,
	change.ErrGrantMinting, change.ErrUnknownGrant, change.ErrSelfGrant, change.ErrNotGrantPeer, change.ErrNotReviewer,
	approvals.ErrSelfReview, approvals.ErrAlreadyReviewed, approvals.ErrRequestLapsed, runner.ErrNoBreakGlass}

// maxErrorText keeps terraform output within one Slack section.
const maxErrorText = 2500

// describe turns an error into what the user reads. It is the one place
// that does so. Errors it does not know get a reference that is also logged.
func (b *Bot) describe(err error, attrs ...any) string {
	var (
		pe     *commands.Error
		le     *change.LookupError
		unmet  *change.RequirementsError
		locked *runner.LockedError
		te     *runner.TerraformError
		ce     *change.ChannelError
		se     *approvals.StateError
		promo  *approvals.PromotionError
		author *approvals.AuthorError
	)
	for _, e := range plainErrors {
		if errors.Is(err, e) {
			return e.Error() + "." // the sentinel alone: what it wraps is for the log
		}
	}
	for _, e := range grantErrors {
		if errors.Is(err, e) {
			return capitalize(e.Error()) + "."
		}
	}
	var notIn *NotInChannelError
	if errors.As(err, &notIn) {
		return fmt.Sprintf(":wave: %s is not in <#%s>; invite it with `/invite @%s` and run the command again.", b.botName, notIn.Channel, b.botName)
	}
	var capErr *change.CapError
	if errors.As(err, &capErr) {
		return capErr.Error() + "."
	}
	if errors.Is(err, approvals.ErrGrantState) {
		return "Nothing was done: " + err.Error() + "."
	}
	switch {
	case errors.As(err, &pe):
		if pe.Usage != "" {
			return fmt.Sprintf("%s\nUsage: `%s`", pe.Detail, pe.Usage)
		}
		return pe.Detail
	case errors.As(err, &le):
		return le.Error()
	case errors.As(err, &locked):
		h := locked.Holder
		return fmt.Sprintf(":lock: *%s* is locked by <@%s> for %s since %s (%s ago, fence %d). "+
			"One pending change per environment: it frees when that plan is applied, rejected or expires.",
			locked.Key, h.User, h.What(), h.Since.UTC().Format("15:04 MST"), ago(b.o.Now(), h.Since), h.Fence)
	case errors.As(err, &ce):
		return ce.Error()
	case errors.Is(err, approvals.ErrForged):
		return ":rotating_light: This record in Redis is not what twokey signed (someone wrote to Redis directly), so nothing was counted, minted or applied. The security record has it; ask again (`/tf plan`, `/tf breakglass`)."
	case errors.Is(err, approvals.ErrSelfApproval):
		return "You asked for this plan, so you cannot approve it: the two-person rule needs two other people."
	case errors.As(err, &author):
		return fmt.Sprintf(":no_entry: You wrote part of this change (GitHub *%s* is its %s), so you cannot approve it: "+
			"the two people who let it through must not be its authors. Your click was not counted.", authorName(author.Author), author.Author.As)
	case errors.Is(err, approvals.ErrNotLinked):
		return ":link: Approvers here need a linked GitHub account, so twokey can tell that you did not write the change. " +
			"Link yours with `/tf link github` (or ask the platform team to list you under `identities` in twokey's config), then click again. Your click was not counted."
	case errors.Is(err, change.ErrIdentity):
		return "Your linked GitHub account could not be read, so your click was not counted. Try again in a minute."
	case errors.As(err, &unmet):
		var b strings.Builder
		b.WriteString(":no_entry: GitHub's side of this change does not hold yet, so your click was not counted:")
		for _, u := range unmet.Unmet {
			fmt.Fprintf(&b, "\n• *%s*: %s", u.Requirement, escape(u.Reason))
		}
		b.WriteString("\nClick *Approve* again once it does.")
		return b.String()
	case errors.Is(err, approvals.ErrPolicyDenied):
		return ":no_entry: Policy denied this plan, so approvals are not taken until a policy owner overrides the denial (the thread lists what was denied). Your click was not counted."
	case errors.Is(err, approvals.ErrNotPolicyOwner):
		return "You are not a policy owner for this environment, so you cannot override its policy. Your click was not counted."
	case errors.Is(err, approvals.ErrNotDenied):
		return "Policy did not deny this plan; there is nothing to override."
	case errors.Is(err, change.ErrPolicyGroup):
		return ":no_entry: " + err.Error() + ". Nothing can be applied until twokey's config defines it."
	case errors.Is(err, approvals.ErrNotAuthorized):
		return "You are not an approver for this environment, so your click was not counted."
	case errors.Is(err, approvals.ErrExpired):
		return "This plan has expired; run `/tf plan` again."
	case errors.As(err, &se) && se.Status == approvals.StatusPlanning:
		return "This plan is still being planned; nothing was changed. Approve once its changes are shown."
	case errors.As(err, &se):
		return fmt.Sprintf("This plan is %s; nothing was changed.", statusWords(se.Status))
	case errors.Is(err, approvals.ErrNotFound):
		return "This plan is unknown to twokey (it may be older than the retention period)."
	case errors.Is(err, runner.ErrPRNotFound), errors.Is(err, runner.ErrPRClosed),
		errors.Is(err, runner.ErrRefNotFound), errors.Is(err, runner.ErrNotDefaultBranch), errors.Is(err, runner.ErrNoWorkDir),
		errors.Is(err, runner.ErrForkPR), errors.Is(err, runner.ErrProvider):
		return err.Error() + "."
	case errors.Is(err, runner.ErrBinary):
		return ":no_entry: " + err.Error() + ". Nothing ran; fix `terraform.path` or `terraform.version` in the config."
	case errors.Is(err, runner.ErrSandbox):
		return ":no_entry: " + err.Error() + ". Nothing ran: twokey does not run a pull request's code outside its sandbox."
	case errors.As(err, &promo):
		return fmt.Sprintf(":no_entry: Promotion rule: %s. Apply it in %s first.", promo.Error(), promo.Requires)
	case errors.Is(err, runner.ErrSource):
		return "GitHub could not be reached, so nothing was planned or applied. Try again in a minute."
	case errors.Is(err, runner.ErrAudit):
		return ":warning: The audit record could not be written, so nothing was applied. The plan stays pending with its approvals; click *Approve* again to retry."
	case errors.Is(err, runner.ErrCredentials):
		return ":warning: Vault is unavailable, so nothing was applied. The plan stays pending with its approvals; click *Approve* again to retry."
	case errors.Is(err, runner.ErrStalePlan) && errors.As(err, &te):
		return "Terraform refused the saved plan because the state changed since it was made (\"Saved plan is stale\"). Nothing was applied; run `/tf plan` again."
	case errors.Is(err, runner.ErrStalePlan):
		return "The saved plan no longer matches what was approved, so nothing was applied. Run `/tf plan` again."
	case errors.Is(err, runner.ErrLockLost):
		return "The environment lock was lost, so the work was stopped."
	case errors.As(err, &te):
		return fmt.Sprintf("terraform %s failed:\n```%s```", te.Step, clip(te.Output, maxErrorText))
	}
	ref := newRef()
	b.log.Error("unexpected error", append(attrs, "ref", ref, "err", err)...)
	return fmt.Sprintf("Something went wrong (reference `%s`). Nothing was applied.", ref)
}

// tell posts an ephemeral message to one user.
func (b *Bot) tell(ctx context.Context, channel, user, text string) { b.Tell(ctx, channel, user, text) }

// fail tells user what went wrong.
func (b *Bot) fail(ctx context.Context, channel, user string, err error, attrs ...any) {
	b.tell(ctx, channel, user, b.describe(err, attrs...))
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func newRef() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// authorName is how an author is named: login, else commit address.
func authorName(a approvals.Author) string {
	if a.Login != "" {
		return a.Login
	}
	return a.Email
}
