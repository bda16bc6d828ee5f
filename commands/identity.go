package commands

import (
	"regexp"
	"strings"
)

// Link is `/tf link github`: link the caller's Slack account to a GitHub
// account.
type Link struct{}

// WhoAmI is `/tf whoami`: the caller's linked GitHub account.
type WhoAmI struct{}

// Unlink is `/tf unlink @user` (admins): drop a user's link.
type Unlink struct {
	User string // Slack user ID
}

func (Link) command()   {}
func (WhoAmI) command() {}
func (Unlink) command() {}

const (
	usageLink   = "/tf link github"
	usageUnlink = "/tf unlink @user"
)

// mentionRE is a user mention as Slack escapes it: <@U123> or <@U123|name>.
var mentionRE = regexp.MustCompile(`^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$`)

func parseIdentity(verb string, args []string) (Command, error) {
	switch verb {
	case "link":
		if len(args) != 1 || strings.ToLower(args[0]) != "github" {
			return nil, &Error{Err: ErrUsage, Detail: "link what? only GitHub accounts are linked", Usage: usageLink}
		}
		return Link{}, nil
	case "whoami":
		if len(args) != 0 {
			return nil, &Error{Err: ErrUsage, Detail: "whoami takes nothing", Usage: "/tf whoami"}
		}
		return WhoAmI{}, nil
	}
	if len(args) != 1 {
		return nil, &Error{Err: ErrUsage, Detail: "unlink needs one user, mentioned", Usage: usageUnlink}
	}
	m := mentionRE.FindStringSubmatch(args[0])
	if m == nil {
		return nil, &Error{Err: ErrUsage, Detail: "unlink needs a user mention like @bob", Usage: usageUnlink}
	}
	return Unlink{User: m[1]}, nil
}
