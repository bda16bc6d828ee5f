package change

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/config"
)

// Errors the service decides. A front end says them in its own words
// (Notifier.Describe); these are the facts.
var (
	ErrNotPlanner = errors.New("you are not allowed to plan in this environment")
	ErrMembership = errors.New("could not read Slack user group membership; refusing to decide")
	ErrNotAdmin   = errors.New("only twokey admins may unlock an environment")
	ErrStateStore = errors.New("twokey's state store (Redis) is unreachable, so nothing was done. Try again in a minute")
	ErrLookAgain  = errors.New("your click came before twokey had read the saved plan back, and its checks found more than you saw then; " +
		"your approval was not counted. Read the plan message again and approve if you still agree")
)

// Errors of break-glass requests.
var (
	ErrNoBreakGlass = errors.New("break-glass is not configured for this environment")
	ErrNotOnCall    = errors.New("only the environment's on-call engineers may ask for break-glass access")
	ErrNoReason     = errors.New("break-glass needs a reason: everyone will read it")
	ErrNoRevoke     = errors.New("only the requester, the environment's on-call engineers and approvers, and twokey admins may revoke a grant")
	ErrNotRequester = errors.New("only the requester can report a problem with their token")
	ErrGrantMinting = errors.New("the token is being created right now; try again in a moment")
	ErrUnknownGrant = errors.New("this break-glass grant is unknown to twokey (it may be older than the retention period)")
	ErrSelfGrant    = errors.New("you asked for this break-glass access, so you cannot approve it")
	ErrNotGrantPeer = errors.New("only the environment's other on-call engineers and its approvers can approve break-glass access; your click was not counted")
	ErrNotReviewer  = errors.New("only the environment's approvers and twokey admins review break-glass grants")
)

// ChannelError: the environment takes commands only in other channels.
type ChannelError struct {
	Env     string
	Allowed []string
}

func (e *ChannelError) Error() string {
	var chans []string
	for _, c := range e.Allowed {
		chans = append(chans, "<#"+c+">")
	}
	return fmt.Sprintf("%s takes commands only in %s", e.Env, strings.Join(chans, ", "))
}

// CapError: the requested duration is over the environment's cap.
type CapError struct {
	Env        string
	Asked, Cap time.Duration
}

func (e *CapError) Error() string {
	return fmt.Sprintf("%s is longer than break-glass in %s allows: at most %s", Human(e.Asked), e.Env, Human(e.Cap))
}

// LookupError says which project or environment a command named that the
// config does not have, or names ambiguously.
type LookupError = config.LookupError

// ErrPolicyGroup: a policy requires an approval from a group the config
// does not define, so no approval could ever satisfy it; the plan fails.
var ErrPolicyGroup = errors.New("policy requires an approval from a group twokey's config does not define")

// undefinedGroups checks that every group a's policies require is one
// pol.groups names.
func undefinedGroups(pol *config.Policy, a approvals.Assessment) error {
	var missing []string
	for _, g := range a.GroupNames() {
		if _, ok := pol.GroupNamed(g); !ok {
			missing = append(missing, g)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s (add it under policy.groups)", ErrPolicyGroup, strings.Join(missing, ", "))
	}
	return nil
}
