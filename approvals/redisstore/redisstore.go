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
	if err := s.create(ctx, s.planKey(p.ID), "plan "+p.ID, p); err != nil {
		return approvals.Plan{}, err
	}
	if err := s.index(ctx, s.activeKey(), p.ID, p.Status.Terminal(), p.CreatedAt); err != nil {
		return approvals.Plan{}, err
	}
	return p, nil
}

// Get reads a plan.
func (s *Store) Get(ctx context.Context, id string) (approvals.Plan, error) {
	var p approvals.Plan
	return p, s.get(ctx, s.planKey(id), "plan "+id, &p)
}

// Put writes p if p.Version is still the stored version.
func (s *Store) Put(ctx context.Context, p approvals.Plan) (approvals.Plan, error) {
	terminal := p.Status.Terminal()
	if err := s.put(ctx, s.planKey(p.ID), "plan "+p.ID, &p, &p.Version, terminal); err != nil {
		return approvals.Plan{}, err
	}
	if err := s.index(ctx, s.activeKey(), p.ID, terminal, p.CreatedAt); err != nil {
		return approvals.Plan{}, err
	}
	return p, nil
}

// create stores doc under key at version 1.
func (s *Store) create(ctx context.Context, key, what string, doc any) error {
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	ok, err := createScript.Run(ctx, s.rdb, []string{key}, data).Int()
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	if ok != 1 {
		return fmt.Errorf("%w: %s", approvals.ErrExists, what)
	}
	return nil
}

// get reads the document under key into doc.
func (s *Store) get(ctx context.Context, key, what string, doc any) error {
	data, err := s.rdb.HGet(ctx, key, "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: %s", approvals.ErrNotFound, what)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if err := json.Unmarshal(data, doc); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}

// put writes doc, whose version is *version, if that is still the stored
// version, and advances *version. A finished document is kept for the
// retention period.
func (s *Store) put(ctx context.Context, key, what string, doc any, version *int64, finished bool) error {
	expected := *version
	*version = expected + 1
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	terminal := "0"
	if finished {
		terminal = "1"
	}
	res, err := putScript.Run(ctx, s.rdb, []string{key}, expected, data, terminal, s.retention.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	switch res {
	case -1:
		return fmt.Errorf("%w: %s", approvals.ErrNotFound, what)
	case 0:
		return fmt.Errorf("%w: %s", approvals.ErrConflict, what)
	}
	return nil
}

// index keeps a set of open plans or grants. It is only an index: Active
// and OpenGrants re-read everything it names, so a crash between the write
// and this update is harmless.
func (s *Store) index(ctx context.Context, key, id string, done bool, created time.Time) error {
	var err error
	if done {
		err = s.rdb.ZRem(ctx, key, id).Err()
	} else {
		err = s.rdb.ZAdd(ctx, key, redis.Z{Score: float64(created.UnixMilli()), Member: id}).Err()
	}
	if err != nil {
		return fmt.Errorf("index %s: %w", id, err)
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

func (s *Store) verifyingKey() string { return s.prefix + "verifying" }

// Started remembers that planID's verification started at at
// (change.Verifications).
func (s *Store) Started(ctx context.Context, planID string, at time.Time) error {
	if err := s.rdb.ZAdd(ctx, s.verifyingKey(), redis.Z{Score: float64(at.UnixMilli()), Member: planID}).Err(); err != nil {
		return fmt.Errorf("remember verification of %s: %w", planID, err)
	}
	return nil
}

// Ended forgets planID's verification.
func (s *Store) Ended(ctx context.Context, planID string) error {
	if err := s.rdb.ZRem(ctx, s.verifyingKey(), planID).Err(); err != nil {
		return fmt.Errorf("forget verification of %s: %w", planID, err)
	}
	return nil
}

// Underway lists the verifications started and not ended.
func (s *Store) Underway(ctx context.Context) (map[string]time.Time, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.verifyingKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list verifications: %w", err)
	}
	out := make(map[string]time.Time, len(zs))
	for _, z := range zs {
		if id, ok := z.Member.(string); ok {
			out[id] = time.UnixMilli(int64(z.Score))
		}
	}
	return out, nil
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

func (s *Store) dirtyKey() string           { return s.prefix + "github:{dirty}" }
func (s *Store) takenKey() string           { return s.prefix + "github:{dirty}:taken" }
func (s *Store) githubKey(id string) string { return s.prefix + "github:{" + id + "}" }

// MarkDirty notes that a plan changed and its pull request should show it.
func (s *Store) MarkDirty(ctx context.Context, id string) error {
	return s.rdb.SAdd(ctx, s.dirtyKey(), id).Err()
}

// TakeDirty moves up to n plans marked dirty to the taken set and returns
// them, in one step: a plan marked again while it syncs is dirty again, and
// one whose syncer dies stays taken until RequeueDirty. DoneDirty ends a
// sync.
func (s *Store) TakeDirty(ctx context.Context, n int) ([]string, error) {
	ids, err := takeDirty.Run(ctx, s.rdb, []string{s.dirtyKey(), s.takenKey()}, n).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read plans to sync: %w", err)
	}
	return ids, nil
}

var takeDirty = redis.NewScript(`
local ids = redis.call('SPOP', KEYS[1], ARGV[1])
if #ids > 0 then redis.call('SADD', KEYS[2], unpack(ids)) end
return ids`)

// DoneDirty ends the sync of a taken plan, whether it went well or the
// plan was marked dirty again to retry.
func (s *Store) DoneDirty(ctx context.Context, id string) error {
	return s.rdb.SRem(ctx, s.takenKey(), id).Err()
}

// RequeueDirty marks every taken plan dirty again: what a syncer that died
// mid-sync left behind. The one syncer that holds the GitHub lease calls it
// when it starts.
func (s *Store) RequeueDirty(ctx context.Context) error {
	return requeueDirty.Run(ctx, s.rdb, []string{s.dirtyKey(), s.takenKey()}).Err()
}

var requeueDirty = redis.NewScript(`
local ids = redis.call('SMEMBERS', KEYS[2])
if #ids > 0 then redis.call('SADD', KEYS[1], unpack(ids)) end
redis.call('DEL', KEYS[2])
return #ids`)

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

func (s *Store) grantKey(id string) string { return s.prefix + "breakglass:{" + id + "}" }
func (s *Store) openGrantsKey() string     { return s.prefix + "breakglass:open" }

var _ approvals.GrantStore = (*Store)(nil)

// CreateGrant stores a new break-glass grant at version 1.
func (s *Store) CreateGrant(ctx context.Context, g approvals.BreakGlass) (approvals.BreakGlass, error) {
	g.Version = 1
	if err := s.create(ctx, s.grantKey(g.ID), "grant "+g.ID, g); err != nil {
		return approvals.BreakGlass{}, err
	}
	if err := s.index(ctx, s.openGrantsKey(), g.ID, g.Closed(), g.CreatedAt); err != nil {
		return approvals.BreakGlass{}, err
	}
	return g, nil
}

// GetGrant reads a grant.
func (s *Store) GetGrant(ctx context.Context, id string) (approvals.BreakGlass, error) {
	var g approvals.BreakGlass
	return g, s.get(ctx, s.grantKey(id), "grant "+id, &g)
}

// PutGrant writes g if g.Version is still the stored version. A closed
// grant is kept for the retention period; its story stays in the audit
// record for good.
func (s *Store) PutGrant(ctx context.Context, g approvals.BreakGlass) (approvals.BreakGlass, error) {
	if err := s.put(ctx, s.grantKey(g.ID), "grant "+g.ID, &g, &g.Version, g.Closed()); err != nil {
		return approvals.BreakGlass{}, err
	}
	if err := s.index(ctx, s.openGrantsKey(), g.ID, g.Closed(), g.CreatedAt); err != nil {
		return approvals.BreakGlass{}, err
	}
	return g, nil
}

// OpenGrants lists grants that are not closed, oldest first.
func (s *Store) OpenGrants(ctx context.Context) ([]approvals.BreakGlass, error) {
	ids, err := s.rdb.ZRange(ctx, s.openGrantsKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	var out []approvals.BreakGlass
	for _, id := range ids {
		g, err := s.GetGrant(ctx, id)
		if errors.Is(err, approvals.ErrNotFound) || err == nil && g.Closed() {
			s.rdb.ZRem(ctx, s.openGrantsKey(), id)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}
