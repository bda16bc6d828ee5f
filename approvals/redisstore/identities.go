package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
)

// link is a stored Slack ↔ GitHub link.
type link struct {
	Login    string    `json:"login"`
	ID       int64     `json:"id"`
	Emails   []string  `json:"emails,omitempty"`
	LinkedAt time.Time `json:"linked_at"`
}

func (s *Store) identityKey(user string) string { return s.prefix + "identity:" + user }

// Identity returns the GitHub account user linked; ok is false if none.
func (s *Store) Identity(ctx context.Context, user string) (approvals.Identity, bool, error) {
	raw, err := s.rdb.Get(ctx, s.identityKey(user)).Bytes()
	if errors.Is(err, redis.Nil) {
		return approvals.Identity{}, false, nil
	}
	if err != nil {
		return approvals.Identity{}, false, fmt.Errorf("read identity of %s: %w", user, err)
	}
	var l link
	if err := json.Unmarshal(raw, &l); err != nil {
		return approvals.Identity{}, false, fmt.Errorf("read identity of %s: %w", user, err)
	}
	return approvals.Identity{Login: l.Login, ID: l.ID, Emails: l.Emails}, true, nil
}

// Link stores user's GitHub account, replacing any earlier link.
func (s *Store) Link(ctx context.Context, user string, id approvals.Identity, at time.Time) error {
	raw, err := json.Marshal(link{Login: id.Login, ID: id.ID, Emails: id.Emails, LinkedAt: at.UTC()})
	if err != nil {
		return err
	}
	return s.rdb.Set(ctx, s.identityKey(user), raw, 0).Err()
}

// Unlink drops user's link; it reports whether there was one.
func (s *Store) Unlink(ctx context.Context, user string) (bool, error) {
	n, err := s.rdb.Del(ctx, s.identityKey(user)).Result()
	return n > 0, err
}
