package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/commands"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// Errors the bot itself decides.
var (
	errOtherWorkspace = errors.New("twokey does not serve this Slack workspace")
	errNotPlanner     = errors.New("you are not allowed to plan in this environment")
	errMembership     = errors.New("could not read Slack user group membership; refusing to decide")
	errUnknownAction  = errors.New("unknown action")
	errNotAdmin       = errors.New("only twokey admins may unlock an environment")
	errStateStore     = errors.New("twokey's state store (Redis) is unreachable, so nothing was done. Try again in a minute")
)

// plainErrors are told to the user in their own words.
var plainErrors = []error{errOtherWorkspace, errNotPlanner, errMembership, errNotAdmin, errStateStore, errUnknownAction}

// channelError: the environment takes commands only in other channels.
type channelError struct {
	env     string
	allowed []string
}

func (e *channelError) Error() string {
	var chans []string
	for _, c := range e.allowed {
		chans = append(chans, "<#"+c+">")
	}
	return fmt.Sprintf("%s takes commands only in %s", e.env, strings.Join(chans, ", "))
}

// maxErrorText keeps terraform output within one Slack section.
const maxErrorText = 2500

// describe turns an error into what the user reads. It is the one place
// that does so. Errors it does not know get a reference that is also logged.
func (b *Bot) describe(err error, attrs ...any) string {
	var (
		pe     *commands.Error
		le     *config.LookupError
		locked *runner.LockedError
		te     *runner.TerraformError
		ce     *channelError
		se     *approvals.StateError
		promo  *approvals.PromotionError
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
	var capErr *capError
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
	case errors.Is(err, approvals.ErrNotAuthorized):
		return "You are not an approver for this environment, so your click was not counted."
	case errors.Is(err, approvals.ErrExpired):
		return "This plan has expired; run `/tf plan` again."
	case errors.As(err, &se):
		return fmt.Sprintf("This plan is %s; nothing was changed.", statusWords(se.Status))
	case errors.Is(err, approvals.ErrNotFound):
		return "This plan is unknown to twokey (it may be older than the retention period)."
	case errors.Is(err, runner.ErrPRNotFound), errors.Is(err, runner.ErrPRClosed),
		errors.Is(err, runner.ErrRefNotFound), errors.Is(err, runner.ErrNotDefaultBranch), errors.Is(err, runner.ErrNoWorkDir),
		errors.Is(err, runner.ErrForkPR), errors.Is(err, runner.ErrProvider):
		return err.Error() + "."
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
func (b *Bot) tell(ctx context.Context, channel, user, text string) {
	if _, err := b.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false)); err != nil {
		b.log.Error("post ephemeral", "user", user, "err", err)
	}
}

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

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "\n…(truncated)"
}

func ago(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func statusWords(s approvals.Status) string {
	switch s {
	case approvals.StatusPlanning:
		return "still planning"
	case approvals.StatusPending:
		return "waiting for approvals"
	case approvals.StatusApplying:
		return "being applied"
	case approvals.StatusApplied:
		return "already applied"
	case approvals.StatusFailed:
		return "applied and failed"
	case approvals.StatusPlanFailed:
		return "a failed plan"
	case approvals.StatusNoChanges:
		return "a plan without changes"
	case approvals.StatusRejected:
		return "rejected"
	case approvals.StatusInvalidated:
		return "void"
	case approvals.StatusInterrupted:
		return "interrupted"
	}
	return string(s)
}
