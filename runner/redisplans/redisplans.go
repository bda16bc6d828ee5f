// Package redisplans is runner.PlanStore on Redis. Saved plan files contain
// sensitive values in clear text, so each is sealed with AES-256-GCM under a
// key every process that plans or applies them shares; the plan ID is the
// additional data, so a sealed plan cannot be passed off as another. With
// runner pools each pool has its own key and its own keys in Redis
// (ForPool), so a worker of one pool can neither read nor make another
// pool's plans.
package redisplans

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/runner"
)

// KeySize is the length of the encryption key.
const KeySize = 32

// Store is a runner.PlanStore.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	pool   string // "" for plans that belong to no pool (serve's embedded runner)
	aead   cipher.AEAD
}

var _ runner.PlanStore = (*Store)(nil)

// New returns a store sealing plans with key (KeySize bytes).
func New(rdb redis.UniversalClient, prefix string, key []byte) (*Store, error) {
	return ForPool(rdb, prefix, "", key)
}

// ForPool returns a store of one runner pool's plans, kept under
// planfile:<pool>:{id} and sealed with that pool's key; the pool's name is
// part of the additional data too.
func ForPool(rdb redis.UniversalClient, prefix, pool string, key []byte) (*Store, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("plan encryption key must be %d bytes, not %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, prefix: prefix, pool: pool, aead: aead}, nil
}

func (s *Store) key(id string) string {
	if s.pool != "" {
		return s.prefix + "planfile:" + s.pool + ":{" + id + "}"
	}
	return s.prefix + "planfile:{" + id + "}"
}

// ad is the additional data a plan is sealed with.
func (s *Store) ad(id string) []byte {
	if s.pool != "" {
		return []byte(s.pool + "/" + id)
	}
	return []byte(id)
}

// Save seals and stores a plan file for ttl.
func (s *Store) Save(ctx context.Context, id string, data []byte, ttl time.Duration) error {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := s.aead.Seal(nonce, nonce, data, s.ad(id))
	if err := s.rdb.Set(ctx, s.key(id), sealed, ttl).Err(); err != nil {
		return fmt.Errorf("store saved plan %s: %w", id, err)
	}
	return nil
}

// Load reads and opens a plan file.
func (s *Store) Load(ctx context.Context, id string) ([]byte, error) {
	sealed, err := s.rdb.Get(ctx, s.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %s", runner.ErrNoPlanFile, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read saved plan %s: %w", id, err)
	}
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, fmt.Errorf("%w: %s is truncated", runner.ErrNoPlanFile, id)
	}
	data, err := s.aead.Open(nil, sealed[:n], sealed[n:], s.ad(id))
	if err != nil {
		return nil, fmt.Errorf("%w: %s does not open with this key", runner.ErrNoPlanFile, id)
	}
	return data, nil
}

// Delete removes a plan file.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, s.key(id)).Err()
}
