// Package commands turns the text of a `/tf …` slash command into a typed
// command. It does no I/O and knows nothing of Slack or configuration: whether
// an environment exists or a user may use it is decided by the caller.
package commands

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/twokey/twokey/ref"
)

// Command is one parsed `/tf` command. The set of commands is closed.
type Command interface{ command() }

// Plan asks for a terraform plan of a revision in one environment.
// Project is empty when the text did not name one.
type Plan struct {
	Project string
	Env     string
	Ref     Ref
}

// Status asks for the locks and pending plans, optionally of one environment.
type Status struct {
	Project string
	Env     string
}

// Unlock frees an environment's lock by force, for admins, with a reason.
type Unlock struct {
	Project string
	Env     string
	Reason  string
}

// Drift asks for a drift check of an environment now: plan the default
// branch's head and say whether live infrastructure differs from it.
type Drift struct {
	Project string
	Env     string
}

// History asks for an environment's last N changes.
type History struct {
	Project string
	Env     string
	N       int
}

// Show asks for one plan's, or one break-glass grant's, whole story.
type Show struct {
	PlanID string // p-… or bg-…
}

// BreakGlass asks for emergency credentials in one environment, for a
// while, for a reason. Incident is the first link in the reason, if any.
type BreakGlass struct {
	Project  string
	Env      string
	Duration time.Duration
	Reason   string
	Incident string
}

// BreakGlassForm asks for the break-glass form (a modal) to fill in.
type BreakGlassForm struct{}

// BreakGlassRevoke ends a break-glass grant's token at once.
type BreakGlassRevoke struct {
	ID string
}

// Help asks for usage.
type Help struct{}

func (Plan) command()    {}
func (Status) command()  {}
func (Unlock) command()  {}
func (Drift) command()   {}
func (History) command() {}
func (Show) command()    {}
func (Help) command()    {}

func (BreakGlass) command()       {}
func (BreakGlassForm) command()   {}
func (BreakGlassRevoke) command() {}

// Ref names the revision to plan (package ref): the head of a pull
// request, or — to roll back — a commit or tag of the default branch.
type Ref = ref.Ref

// Errors returned by Parse, wrapped in a *Error that carries the usage line.
var (
	ErrUnknownCommand = errors.New("unknown command")
	ErrUsage          = errors.New("wrong arguments")
	ErrMalformedRef   = ref.ErrMalformed
	ErrMalformedName  = errors.New("malformed name")
)

// Error is a parse failure: what was wrong and how the command is used.
type Error struct {
	Err    error  // one of the sentinels above
	Detail string // what exactly was wrong, safe to show the user
	Usage  string // the usage line of the command, if known
}

func (e *Error) Error() string { return e.Detail }
func (e *Error) Unwrap() error { return e.Err }

// Usage is the help text shown by `/tf help` and after a usage error.
const Usage = "```" + `
/tf plan [project] <env> pr-<number>   plan a pull request's head commit in an environment
/tf plan [project] <env> sha-<sha>      plan a commit of the default branch (a rollback)
/tf plan [project] <env> ref-<tag>      plan a tag of the default branch
/tf status [project] [env]             locks and pending plans, with age and approvals
/tf history [project] <env> [n]        the last n changes (default 10): when, what, who, result
/tf show <plan-id>|<grant-id>           one plan's or grant's whole story, from the audit record
/tf drift [project/]<env>               does live infrastructure still match the default branch?
/tf unlock [project/]<env> <reason>    admins: free a stuck environment lock
/tf breakglass [project] <env> <duration> <reason>
                                       on-call: emergency credentials (e.g. 30m), announced and reviewed
/tf breakglass                         the same, as a form
/tf breakglass revoke <grant-id>       end an emergency credential now
/tf link github                        link your GitHub account (authors cannot approve their own change)
/tf whoami                             your linked GitHub account
/tf unlink @user                       admins: drop someone's GitHub link
/tf help                               this text
` + "```"

const (
	usagePlan    = "/tf plan [project] <env> pr-<number> | sha-<40 hex> | ref-<tag>"
	usageStatus  = "/tf status [project] [env]"
	usageUnlock  = "/tf unlock [project/]<env> <reason>"
	usageDrift   = "/tf drift [project/]<env>"
	usageHistory = "/tf history [project] <env> [n]"
	usageShow    = "/tf show <plan-id> | <grant-id>"
	usageBG      = "/tf breakglass [project] <env> <duration> <reason>  |  /tf breakglass revoke <grant-id>"
)

// MaxHistory bounds /tf history.
const MaxHistory = 50

// maxReason bounds a reason's length.
const maxReason = 500

// maxTextLen bounds what Parse reads; Slack's own limit on command text is
// lower, so anything longer is not a real command.
const maxTextLen = 4000

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	planIDRE = regexp.MustCompile(`^p-[a-z2-9]{8}$`)
	grantRE  = regexp.MustCompile(`^bg-[a-z2-9]{8}$`)
	linkRE   = regexp.MustCompile(`https://[^\s<>|"]+`)
)

// Parse parses the text after `/tf`.
func Parse(text string) (Command, error) {
	if len(text) > maxTextLen {
		return nil, &Error{Err: ErrUsage, Detail: "command text is too long"}
	}
	args, err := fields(text)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return Help{}, nil
	}
	verb, args := strings.ToLower(args[0]), args[1:]
	switch verb {
	case "plan":
		return parsePlan(args)
	case "status":
		return parseStatus(args)
	case "unlock":
		return parseUnlock(args)
	case "drift":
		return parseDrift(args)
	case "history":
		return parseHistory(args)
	case "show":
		if len(args) != 1 || !planIDRE.MatchString(args[0]) && !grantRE.MatchString(args[0]) {
			return nil, &Error{Err: ErrUsage, Detail: "show needs a plan ID like p-7k2m9qab, or a grant ID like bg-7k2m9qab", Usage: usageShow}
		}
		return Show{PlanID: args[0]}, nil
	case "breakglass", "break-glass":
		return parseBreakGlass(args)
	case "link", "whoami", "unlink":
		return parseIdentity(verb, args)
	case "help", "-h", "--help":
		return Help{}, nil
	}
	return nil, &Error{
		Err:    ErrUnknownCommand,
		Detail: fmt.Sprintf("unknown command %q; try `/tf help`", truncate(verb, 40)),
	}
}

func parsePlan(args []string) (Command, error) {
	if len(args) < 2 || len(args) > 3 {
		return nil, &Error{Err: ErrUsage, Detail: "plan needs an environment and a pull request", Usage: usagePlan}
	}
	names, refText := args[:len(args)-1], args[len(args)-1]
	rev, err := parseRef(refText)
	if err != nil {
		return nil, err
	}
	if err := checkNames(names, usagePlan); err != nil {
		return nil, err
	}
	p := Plan{Env: names[len(names)-1], Ref: rev}
	if len(names) == 2 {
		p.Project = names[0]
	}
	return p, nil
}

func parseStatus(args []string) (Command, error) {
	if len(args) > 2 {
		return nil, &Error{Err: ErrUsage, Detail: "status takes at most a project and an environment", Usage: usageStatus}
	}
	if err := checkNames(args, usageStatus); err != nil {
		return nil, err
	}
	s := Status{}
	switch len(args) {
	case 1:
		s.Env = args[0]
	case 2:
		s.Project, s.Env = args[0], args[1]
	}
	return s, nil
}

func parseHistory(args []string) (Command, error) {
	h := History{N: 10}
	if n := len(args); n > 0 {
		if v, err := strconv.Atoi(args[n-1]); err == nil {
			if v < 1 || v > MaxHistory {
				return nil, &Error{Err: ErrUsage, Detail: fmt.Sprintf("history shows 1 to %d changes", MaxHistory), Usage: usageHistory}
			}
			h.N, args = v, args[:n-1]
		}
	}
	if len(args) < 1 || len(args) > 2 {
		return nil, &Error{Err: ErrUsage, Detail: "history needs an environment", Usage: usageHistory}
	}
	if err := checkNames(args, usageHistory); err != nil {
		return nil, err
	}
	h.Env = args[len(args)-1]
	if len(args) == 2 {
		h.Project = args[0]
	}
	return h, nil
}

func parseDrift(args []string) (Command, error) {
	var names []string
	switch len(args) {
	case 1:
		if project, env, ok := strings.Cut(args[0], "/"); ok {
			names = []string{project, env}
		} else {
			names = args
		}
	case 2:
		names = args
	default:
		return nil, &Error{Err: ErrUsage, Detail: "drift needs an environment (and, with several projects, its project)", Usage: usageDrift}
	}
	if err := checkNames(names, usageDrift); err != nil {
		return nil, err
	}
	d := Drift{Env: names[len(names)-1]}
	if len(names) == 2 {
		d.Project = names[0]
	}
	return d, nil
}

func parseUnlock(args []string) (Command, error) {
	if len(args) < 2 {
		return nil, &Error{Err: ErrUsage, Detail: "unlock needs an environment and a reason", Usage: usageUnlock}
	}
	u := Unlock{Env: args[0], Reason: strings.TrimSpace(strings.Join(args[1:], " "))}
	if u.Reason == "" {
		return nil, &Error{Err: ErrUsage, Detail: "unlock needs a reason, for the record", Usage: usageUnlock}
	}
	if project, env, ok := strings.Cut(args[0], "/"); ok {
		u.Project, u.Env = project, env
		if err := checkNames([]string{project}, usageUnlock); err != nil {
			return nil, err
		}
	}
	if err := checkNames([]string{u.Env}, usageUnlock); err != nil {
		return nil, err
	}
	if len(u.Reason) > maxReason {
		return nil, &Error{Err: ErrUsage, Detail: fmt.Sprintf("the reason is longer than %d characters", maxReason), Usage: usageUnlock}
	}
	return u, nil
}

func parseBreakGlass(args []string) (Command, error) {
	if len(args) == 0 {
		return BreakGlassForm{}, nil
	}
	if strings.ToLower(args[0]) == "revoke" {
		if len(args) != 2 || !grantRE.MatchString(args[1]) {
			return nil, &Error{Err: ErrUsage, Detail: "revoke needs a grant ID, like bg-7k2m9qab", Usage: usageBG}
		}
		return BreakGlassRevoke{ID: args[1]}, nil
	}
	// [project] env duration reason…: the duration says where the names end.
	at := -1
	for i := 1; i <= 2 && i < len(args); i++ {
		if _, err := time.ParseDuration(args[i]); err == nil {
			at = i
			break
		}
	}
	if at < 0 {
		return nil, &Error{Err: ErrUsage, Detail: "breakglass needs an environment, a duration like 30m and a reason", Usage: usageBG}
	}
	d, _ := time.ParseDuration(args[at])
	if d < time.Minute {
		return nil, &Error{Err: ErrUsage, Detail: "the duration must be at least 1m", Usage: usageBG}
	}
	if err := checkNames(args[:at], usageBG); err != nil {
		return nil, err
	}
	bg := BreakGlass{Env: args[at-1], Duration: d, Reason: strings.TrimSpace(strings.Join(args[at+1:], " "))}
	if at == 2 {
		bg.Project = args[0]
	}
	if bg.Reason == "" {
		return nil, &Error{Err: ErrUsage, Detail: "breakglass needs a reason: everyone will read it", Usage: usageBG}
	}
	if len(bg.Reason) > maxReason {
		return nil, &Error{Err: ErrUsage, Detail: fmt.Sprintf("the reason is longer than %d characters", maxReason), Usage: usageBG}
	}
	bg.Incident = linkRE.FindString(bg.Reason)
	return bg, nil
}

// fields splits text on white space, keeping "quoted strings" (straight or
// Slack's curly quotes) together.
func fields(text string) ([]string, error) {
	text = strings.NewReplacer("\u201c", `"`, "\u201d", `"`).Replace(text)
	var (
		out    []string
		cur    strings.Builder
		quoted bool
		inWord bool
	)
	for _, r := range text {
		switch {
		case r == '"':
			if quoted {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
			quoted = !quoted
		case !quoted && unicode.IsSpace(r):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, &Error{Err: ErrUsage, Detail: "a quote is not closed"}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

func parseRef(s string) (Ref, error) {
	r, err := ref.Parse(s)
	if err == nil && r.IsZero() {
		err = &ref.MalformedError{Detail: "a plan needs a revision: pr-<number>, sha-<40 hex digits> or ref-<tag>"}
	}
	var me *ref.MalformedError
	if errors.As(err, &me) {
		return Ref{}, &Error{Err: ErrMalformedRef, Detail: me.Detail, Usage: usagePlan}
	}
	return r, err
}

func checkNames(names []string, usage string) error {
	for _, n := range names {
		if !nameRE.MatchString(n) {
			return &Error{
				Err:    ErrMalformedName,
				Detail: fmt.Sprintf("%q is not a valid project or environment name (lowercase letters, digits, - and _)", truncate(n, 40)),
				Usage:  usage,
			}
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
