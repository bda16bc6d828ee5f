package bot

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/slack-go/slack"
)

// directory answers "is this user one of these people?" from Slack user IDs
// and user group membership, read with usergroups.users.list and cached for
// a short time. Names are never consulted.
type directory struct {
	api *slack.Client
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	groups map[string]cachedGroup
	names  map[string]cachedName
}

type cachedName struct {
	name string
	at   time.Time
}

// nameTTL: a display name is recorded as it was at the time, give or take this.
const nameTTL = 10 * time.Minute

type cachedGroup struct {
	members []string
	at      time.Time
}

func newDirectory(api *slack.Client, ttl time.Duration, now func() time.Time) *directory {
	return &directory{api: api, ttl: ttl, now: now, groups: map[string]cachedGroup{}, names: map[string]cachedName{}}
}

// InAnyGroup reports whether user is a member of any of groups, read with
// usergroups.users.list and cached for a short time unless fresh. An error
// means membership could not be read: callers treat it as "no".
func (d *directory) InAnyGroup(ctx context.Context, user string, groups []string, fresh bool) (bool, error) {
	var firstErr error
	for _, g := range groups {
		members, err := d.members(ctx, g, fresh)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if slices.Contains(members, user) {
			return true, nil
		}
	}
	return false, firstErr
}

func (d *directory) members(ctx context.Context, group string, fresh bool) ([]string, error) {
	d.mu.Lock()
	c, ok := d.groups[group]
	d.mu.Unlock()
	if ok && !fresh && d.now().Sub(c.at) < d.ttl {
		return c.members, nil
	}
	members, err := d.api.GetUserGroupMembersContext(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("read members of user group %s: %w", group, err)
	}
	d.mu.Lock()
	d.groups[group] = cachedGroup{members: members, at: d.now()}
	d.mu.Unlock()
	return members, nil
}

// name is a user's display name, for the record; decisions never use it.
// When Slack cannot say, it is the ID.
func (d *directory) Name(ctx context.Context, user string) string {
	d.mu.Lock()
	c, ok := d.names[user]
	d.mu.Unlock()
	if ok && d.now().Sub(c.at) < nameTTL {
		return c.name
	}
	u, err := d.api.GetUserInfoContext(ctx, user)
	if err != nil {
		return user
	}
	name := u.Profile.DisplayName
	if name == "" {
		name = u.RealName
	}
	if name == "" {
		name = u.Name
	}
	d.mu.Lock()
	d.names[user] = cachedName{name: name, at: d.now()}
	d.mu.Unlock()
	return name
}
