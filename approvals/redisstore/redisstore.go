// Package redisstore is approvals.Store on Redis. Each plan is a hash of its
// JSON and a version number; Put is a Lua compare-and-swap on the version, so
// of two processes writing the same read, exactly one wins.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
)

// Store is an approvals.Store.
type Store struct {
	rdb redis.UniversalClient
	// prefix namespaces every key, e.g. "twokey:".
	prefix string
	// retention is how long a finished plan is kept, so that old buttons
	// still answer "already applied" rather than "unknown plan".
	retention time.Duration
}

// DefaultRetention keeps finished plans for 30 days.
const DefaultRetention = 30 * 24 * time.Hour

// New returns a store under prefix; retention ≤ 0 means DefaultRetention.
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &Store{rdb: rdb, prefix: prefix, retention: retention}
}

var _ approvals.Store = (*Store)(nil)

func (s *Store) planKey(id string) string { return s.prefix + "plan:{" + id + "}" }
func (s *Store) activeKey() string        { return s.prefix + "plans:active" }

var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'data', ARGV[1])
return 1
`)

// putScript replaces the plan if the stored version is ARGV[1]; a finished
// plan (ARGV[3] = '1') is kept for ARGV[4] ms.
var putScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'data', ARGV[2])
if ARGV[3] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
`)

// Create stores a new plan at version 1.
func (s *Store) Create(ctx context.Context, p approvals.Plan) (approvals.Plan, error) {
	p.Version = 1
	data, err := json.Marshal(p)
	if err != nil {
		return approvals.Plan{}, err
	}
	ok, err := createScript.Run(ctx, s.rdb, []string{s.planKey(p.ID)}, data).Int()
	if err != nil {
		return approvals.Plan{}, fmt.Errorf("create plan %s: %w", p.ID, err)
	}
	if ok != 1 {
		return approvals.Plan{}, fmt.Errorf("%w: %s", approvals.ErrExists, p.ID)
	}
	if err := s.index(ctx, p); err != nil {
		return approvals.Plan{}, err
	}
	return p, nil
}

// Get reads a plan.
func (s *Store) Get(ctx context.Context, id string) (approvals.Plan, error) {
	data, err := s.rdb.HGet(ctx, s.planKey(id), "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return approvals.Plan{}, fmt.Errorf("%w: %s", approvals.ErrNotFound, id)
	}
	if err != nil {
		return approvals.Plan{}, fmt.Errorf("read plan %s: %w", id, err)
	}
	var p approvals.Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return approvals.Plan{}, fmt.Errorf("decode plan %s: %w", id, err)
	}
	return p, nil
}

// Put writes p if p.Version is still the stored version.
func (s *Store) Put(ctx context.Context, p approvals.Plan) (approvals.Plan, error) {
	expected := p.Version
	p.Version = expected + 1
	data, err := json.Marshal(p)
	if err != nil {
		return approvals.Plan{}, err
	}
	terminal := "0"
	if p.Status.Terminal() {
		terminal = "1"
	}
	res, err := putScript.Run(ctx, s.rdb, []string{s.planKey(p.ID)},
		expected, data, terminal, s.retention.Milliseconds()).Int()
	if err != nil {
		return approvals.Plan{}, fmt.Errorf("write plan %s: %w", p.ID, err)
	}
	switch res {
	case -1:
		return approvals.Plan{}, fmt.Errorf("%w: %s", approvals.ErrNotFound, p.ID)
	case 0:
		return approvals.Plan{}, fmt.Errorf("%w: %s", approvals.ErrConflict, p.ID)
	}
	if err := s.index(ctx, p); err != nil {
		return approvals.Plan{}, err
	}
	return p, nil
}

// index keeps the set of open plans. It is only an index: Active re-reads
// every plan it names, so a crash between the write and this update is
// harmless.
func (s *Store) index(ctx context.Context, p approvals.Plan) error {
	var err error
	if p.Status.Terminal() {
		err = s.rdb.ZRem(ctx, s.activeKey(), p.ID).Err()
	} else {
		err = s.rdb.ZAdd(ctx, s.activeKey(), redis.Z{Score: float64(p.CreatedAt.UnixMilli()), Member: p.ID}).Err()
	}
	if err != nil {
		return fmt.Errorf("index plan %s: %w", p.ID, err)
	}
	return nil
}

// Active lists open plans, oldest first.
func (s *Store) Active(ctx context.Context) ([]approvals.Plan, error) {
	ids, err := s.rdb.ZRange(ctx, s.activeKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	var plans []approvals.Plan
	for _, id := range ids {
		p, err := s.Get(ctx, id)
		if errors.Is(err, approvals.ErrNotFound) {
			s.rdb.ZRem(ctx, s.activeKey(), id)
			continue
		}
		if err != nil {
			return nil, err
		}
		if p.Status.Terminal() {
			s.rdb.ZRem(ctx, s.activeKey(), id)
			continue
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// First reports whether key has not been seen in the last ttl, and
// remembers it: SET NX EX, so of two processes seeing the same Slack
// envelope or click at once, exactly one gets true.
func (s *Store) First(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.prefix+"seen:"+key, 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("remember %s: %w", key, err)
	}
	return ok, nil
}

// Forget lets key be first again.
func (s *Store) Forget(ctx context.Context, key string) error {
	if err := s.rdb.Del(ctx, s.prefix+"seen:"+key).Err(); err != nil {
		return fmt.Errorf("forget %s: %w", key, err)
	}
	return nil
}

// appliedKey holds, per project and environment, each commit applied there
// successfully, scored by when it first was.
func (s *Store) appliedKey(project, env string) string {
	return s.prefix + "applied:{" + project + "/" + env + "}"
}

// RecordApplied notes that sha was applied successfully in project/env. The
// first time counts, so a soak period runs from the first apply.
func (s *Store) RecordApplied(ctx context.Context, project, env, sha string, at time.Time) error {
	err := s.rdb.ZAddNX(ctx, s.appliedKey(project, env), redis.Z{Score: float64(at.UnixMilli()), Member: sha}).Err()
	if err != nil {
		return fmt.Errorf("record applied %s in %s/%s: %w", sha, project, env, err)
	}
	return nil
}

// AppliedAt reports when sha was first applied successfully in project/env.
func (s *Store) AppliedAt(ctx context.Context, project, env, sha string) (time.Time, bool, error) {
	ms, err := s.rdb.ZScore(ctx, s.appliedKey(project, env), sha).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read applied %s in %s/%s: %w", sha, project, env, err)
	}
	return time.UnixMilli(int64(ms)).UTC(), true, nil
}

// RecentApplied lists the newest n commits applied in project/env, newest first.
func (s *Store) RecentApplied(ctx context.Context, project, env string, n int) ([]approvals.Applied, error) {
	zs, err := s.rdb.ZRevRangeWithScores(ctx, s.appliedKey(project, env), 0, int64(n)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list applied in %s/%s: %w", project, env, err)
	}
	out := make([]approvals.Applied, len(zs))
	for i, z := range zs {
		out[i] = approvals.Applied{SHA: z.Member.(string), At: time.UnixMilli(int64(z.Score)).UTC()}
	}
	return out, nil
}

func (s *Store) dirtyKey() string           { return s.prefix + "github:dirty" }
func (s *Store) githubKey(id string) string { return s.prefix + "github:{" + id + "}" }

// MarkDirty notes that a plan changed and its pull request should show it.
func (s *Store) MarkDirty(ctx context.Context, id string) error {
	return s.rdb.SAdd(ctx, s.dirtyKey(), id).Err()
}

// TakeDirty returns the plans marked dirty and unmarks them; a plan whose
// sync fails is marked again.
func (s *Store) TakeDirty(ctx context.Context, n int) ([]string, error) {
	ids, err := s.rdb.SPopN(ctx, s.dirtyKey(), int64(n)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read plans to sync: %w", err)
	}
	return ids, nil
}

// GitHubState returns what was last written to GitHub for a plan: its
// comment's ID and the posted values (the comment body's digest, each
// status's state), keyed by name.
func (s *Store) GitHubState(ctx context.Context, id string) (int64, map[string]string, error) {
	m, err := s.rdb.HGetAll(ctx, s.githubKey(id)).Result()
	if err != nil {
		return 0, nil, fmt.Errorf("read github state of %s: %w", id, err)
	}
	var comment int64
	if c, ok := m["comment_id"]; ok {
		comment, _ = strconv.ParseInt(c, 10, 64)
		delete(m, "comment_id")
	}
	return comment, m, nil
}

// SetGitHubState records what was written to GitHub for a plan.
func (s *Store) SetGitHubState(ctx context.Context, id string, comment int64, posted map[string]string) error {
	fields := map[string]any{"comment_id": comment}
	for k, v := range posted {
		fields[k] = v
	}
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, s.githubKey(id), fields)
	pipe.Expire(ctx, s.githubKey(id), s.retention)
	_, err := pipe.Exec(ctx)
	return err
}
