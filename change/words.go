// Words: how plans, grants and their states are said, shared by the
// front end, the GitHub feedback and the service's own notes.

package change

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
)

// label names what a plan planned: "PR #42", "tag v1.2", "commit 1a2b3c4".
func Label(p approvals.Plan) string {
	if p.Ref.IsZero() {
		return fmt.Sprintf("PR #%d", p.PR)
	}
	return p.Ref.Label()
}

func Mentions(users []string) string {
	var m []string
	for _, u := range users {
		m = append(m, "<@"+u+">")
	}
	return strings.Join(m, ", ")
}

// human renders a duration the way people write one: 30m, 1h, 1h30m, 45s.
func Human(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := d/time.Hour, (d%time.Hour)/time.Minute, (d%time.Minute)/time.Second
	var out string
	if h > 0 {
		out += fmt.Sprintf("%dh", h)
	}
	if m > 0 {
		out += fmt.Sprintf("%dm", m)
	}
	if s > 0 || out == "" {
		out += fmt.Sprintf("%ds", s)
	}
	return out
}

func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "\n…(truncated)"
}

func Ago(now, t time.Time) string {
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

func StatusWords(s approvals.Status) string {
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

func StatusHeadline(p approvals.Plan) string {
	switch p.Status {
	case approvals.StatusPlanning:
		if p.Preview != nil {
			return "Planned, checking"
		}
		return "Planning"
	case approvals.StatusPending:
		return "Plan ready for review"
	case approvals.StatusApplying:
		return "Applying"
	case approvals.StatusApplied:
		if VerificationFailed(p) {
			return "Applied, verification failed"
		}
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

func StatusIcon(s approvals.Status) string {
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

// How a verification after an apply went, in an applied plan's outcome
// (its Reason): a failure leads it, a pass follows the apply's summary.
const (
	VerifyFailedWords = "applied, verification failed"
	VerifiedWords     = "verified"
)

// VerificationFailed reports whether p was applied and then failed its
// verification.
func VerificationFailed(p approvals.Plan) bool {
	return p.Status == approvals.StatusApplied && strings.HasPrefix(p.Reason, VerifyFailedWords)
}

// PlanIcon is StatusIcon, with a warning for an apply whose verification
// failed.
func PlanIcon(p approvals.Plan) string {
	if VerificationFailed(p) {
		return "⚠️"
	}
	return StatusIcon(p.Status)
}

// outcome says how a finished plan ended, or "" while it is open. Reasons
// are mrkdwn written by the bot, which escapes any user text it puts in them.
func Outcome(p approvals.Plan) string {
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
func ResourceList(rs []approvals.Resource) string {
	var out strings.Builder
	out.WriteString("```")
	for i, r := range rs {
		line := fmt.Sprintf("%s %s%s\n", ActionSign(r.Action), r.Address, ActionNote(r.Action))
		more := fmt.Sprintf("… and %d more\n", len(rs)-i)
		if out.Len()+len(line)+len(more)+3 > MaxSection {
			out.WriteString(more)
			break
		}
		out.WriteString(line)
	}
	out.WriteString("```")
	return out.String()
}

func ActionSign(a approvals.Action) string {
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

func ActionNote(a approvals.Action) string {
	switch a {
	case approvals.ActionDelete:
		return "   ⚠ DESTROY"
	case approvals.ActionReplace:
		return "   ⚠ REPLACE (destroy and create)"
	}
	return ""
}

// escape makes user-supplied text (PR titles, reasons) safe in mrkdwn.
func Escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func Short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// expiresIn renders the time left before t.
func ExpiresIn(now, t time.Time) string {
	if !t.After(now) {
		return "expired"
	}
	return "in " + Ago(t, now)
}

// minutesLeft is the active grant's time left, in minutes rounded up.
func MinutesLeft(g approvals.BreakGlass, now time.Time) int {
	return int((g.ExpiresAt.Sub(now) + time.Minute - 1) / time.Minute)
}

func GrantIcon(g approvals.BreakGlass) string {
	switch {
	case g.Status == approvals.GrantActive || g.Status == approvals.GrantMinting:
		return "🔓"
	case g.Status == approvals.GrantRequested:
		return "🚨"
	case g.Outcome == approvals.OutcomeCompromised:
		return "☠️"
	case g.HadToken() && !g.Reviewed():
		return "👀"
	}
	return "🔒"
}

// grantWords says where a grant is, in a few words.
func GrantWords(g approvals.BreakGlass) string {
	switch g.Status {
	case approvals.GrantRequested:
		return "waiting for approval"
	case approvals.GrantMinting:
		return "creating the token"
	case approvals.GrantActive:
		if g.Delivered {
			return "active: token delivered"
		}
		return "active: delivering the token"
	}
	w := map[approvals.Outcome]string{
		approvals.OutcomeDenied: "denied", approvals.OutcomeLapsed: "lapsed", approvals.OutcomeFailed: "failed",
		approvals.OutcomeExpired: "expired", approvals.OutcomeRevoked: "revoked", approvals.OutcomeCompromised: "compromised",
	}[g.Outcome]
	switch {
	case g.HadToken() && g.Reviewed():
		w += ", reviewed"
	case g.HadToken():
		w += ", *unreviewed*"
	}
	return w
}

func EndedWords(g approvals.BreakGlass) string {
	by := ""
	if g.EndedBy != "" {
		by = " by <@" + g.EndedBy + ">"
	}
	switch g.Outcome {
	case approvals.OutcomeDenied:
		return "Denied" + by + ": " + g.Note + "."
	case approvals.OutcomeCompromised:
		return ":rotating_light: Compromised: " + g.Note + "."
	}
	return strings.ToUpper(g.Note[:1]) + g.Note[1:] + by + "."
}

// MaxSection keeps a text within one Slack section block (3,000 characters).
const MaxSection = 2900

// The shapes of plan and grant IDs.
var (
	PlanIDRE  = regexp.MustCompile(`^p-[a-z2-9]{8}$`)
	GrantIDRE = regexp.MustCompile(`^bg-[a-z2-9]{8}$`)
)

// Needs says what a pending plan still needs before it can be applied:
// "1 more approval", "an override by a policy owner, then 2 approvals",
// "an approval from security".
func Needs(p approvals.Plan) string {
	var parts []string
	if !approvals.Overridden(p) {
		n := p.OverridesRequired - len(approvals.Overriders(p))
		switch {
		case p.OverridesRequired == 0:
			parts = append(parts, "a policy change (nobody may override this denial)")
		case n == 1:
			parts = append(parts, "an override by a policy owner")
		default:
			parts = append(parts, fmt.Sprintf("overrides by %d more policy owners", n))
		}
	}
	switch m := approvals.Missing(p); m {
	case 0:
	case 1:
		parts = append(parts, "1 more approval")
	default:
		parts = append(parts, fmt.Sprintf("%d more approvals", m))
	}
	for _, g := range approvals.MissingGroups(p) {
		parts = append(parts, "an approval from "+Escape(g))
	}
	if len(parts) == 0 {
		return "nothing more"
	}
	return strings.Join(parts, ", ")
}

// findingRules names the rules of findings: "twokey.network.deny, …".
func findingRules(fs []approvals.Finding) string {
	var rules []string
	for _, f := range fs {
		if !slices.Contains(rules, f.Rule) {
			rules = append(rules, f.Rule)
		}
	}
	return strings.Join(rules, ", ")
}

// PolicySummary is the plan message's policy line: passed, warnings or
// denied, each with the rule's message, and why the quorum is what it is.
func PolicySummary(p approvals.Plan) string {
	a := p.Policy
	var b strings.Builder
	switch a.Status() {
	case approvals.PolicyDenied:
		fmt.Fprintf(&b, ":no_entry: *Policy denied* (%d)", len(a.Denied))
		for _, f := range a.Denied[:min(len(a.Denied), 3)] {
			fmt.Fprintf(&b, "\n• %s", Escape(f.Message))
		}
		if len(a.Denied) > 3 {
			fmt.Fprintf(&b, "\n• … %d more in the thread", len(a.Denied)-3)
		}
		if n := len(approvals.Overriders(p)); n > 0 {
			fmt.Fprintf(&b, "\nOverridden by %s.", Mentions(approvals.Overriders(p)))
		}
	case approvals.PolicyWarnings:
		fmt.Fprintf(&b, ":warning: *Policy passed with %d warning(s)*", len(a.Warnings))
		for _, f := range a.Warnings[:min(len(a.Warnings), 3)] {
			fmt.Fprintf(&b, "\n• %s", Escape(f.Message))
		}
	case approvals.PolicyPassed:
		b.WriteString(":white_check_mark: *Policy passed*")
	}
	if risks := riskWords(a.Risks); risks != "" {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		b.WriteString(":warning: *Risks*: " + risks)
	}
	if a.Required > 0 || len(a.Groups) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "*Needs* %d approvals", p.Required)
		if a.Required == p.Required {
			b.WriteString(" (raised by policy)")
		}
		for _, g := range a.Groups {
			fmt.Fprintf(&b, ", one from *%s*", Escape(g.Group))
			if g.Reason != "" {
				b.WriteString(" (" + Escape(g.Reason) + ")")
			}
		}
		for _, r := range a.Reasons {
			b.WriteString("; " + Escape(r))
		}
	}
	return b.String()
}

// riskWords lists built-in risk flags by kind: "destroy 2 (a, b), iam 1 (c)".
func riskWords(rs []approvals.Risk) string {
	byKind := map[approvals.RiskKind][]string{}
	var kinds []approvals.RiskKind
	for _, r := range rs {
		if _, seen := byKind[r.Kind]; !seen {
			kinds = append(kinds, r.Kind)
		}
		byKind[r.Kind] = append(byKind[r.Kind], r.Address)
	}
	var parts []string
	for _, k := range kinds {
		as := byKind[k]
		shown := as[:min(len(as), 3)]
		more := ""
		if len(as) > 3 {
			more = fmt.Sprintf(", +%d", len(as)-3)
		}
		parts = append(parts, fmt.Sprintf("%s %d (`%s`%s)", strings.ReplaceAll(string(k), "_", " "), len(as), Escape(strings.Join(shown, "`, `")), more))
	}
	return strings.Join(parts, ", ")
}

// PolicyReport is every policy result of a plan, for its thread; empty when
// policy was not checked and found no risk.
func PolicyReport(p approvals.Plan) string {
	a := p.Policy
	if !a.Checked && len(a.Risks) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*Policy check*: %s", strings.ReplaceAll(string(a.Status()), "_", " "))
	for _, f := range a.Denied {
		fmt.Fprintf(&b, "\n:no_entry: deny `%s`: %s", Escape(f.Rule), Escape(f.Message))
	}
	for _, f := range a.Warnings {
		fmt.Fprintf(&b, "\n:warning: warn `%s`: %s", Escape(f.Rule), Escape(f.Message))
	}
	for _, r := range a.Risks {
		fmt.Fprintf(&b, "\n:small_orange_diamond: %s `%s`", strings.ReplaceAll(string(r.Kind), "_", " "), Escape(r.Address))
		if r.Detail != "" {
			b.WriteString(": " + Escape(r.Detail))
		}
	}
	if len(a.Denied) > 0 {
		switch {
		case p.OverridesRequired == 0:
			b.WriteString("\nNobody may override a denial here: change the plan, or the policy.")
		default:
			fmt.Fprintf(&b, "\nApprovals are refused until %d policy owner(s) override the denial.", p.OverridesRequired)
		}
	}
	return Clip(b.String(), MaxSection)
}
