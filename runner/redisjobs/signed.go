package redisjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/attest"
)

// Every job is signed by the serve process that dispatched it: the job's
// exact bytes, in the stream entry's "sig" field. A worker acts on no job
// that a serve key did not sign — not a plan (it would run a revision of
// the writer's choosing), not a break-glass token (it would mint one into
// Redis), not an apply (whose grant is verified besides). A signed job is
// acted on once: a copy put on the stream again is refused.

// purposeJob is what a job's signature is for.
const purposeJob = "job"

// MaxJobAge is how long after dispatch a job may still start; a takeover
// of a job older than this is refused too.
const MaxJobAge = time.Hour

// seenKey remembers which stream entry first carried a job.
func seenKey(prefix, pool, id string) string { return prefix + "jobseen:" + pool + ":{" + id + "}" }

// signJob returns the stream entry of a job: its bytes and their signature.
func signJob(s *attest.Signer, body []byte) (map[string]any, error) {
	if s == nil {
		return nil, errors.New("redisjobs: this process has no signing key, so no worker would take its jobs")
	}
	sig, err := json.Marshal(s.Sign(purposeJob, body))
	if err != nil {
		return nil, err
	}
	return map[string]any{"job": body, "sig": sig}, nil
}

// verifyJob checks a job's signature and age, and that this stream entry is
// the first to carry it (or is that same entry, taken over from a worker
// that died).
func (w *Worker) verifyJob(ctx context.Context, msg redis.XMessage, raw string, j Job) error {
	var sig attest.Signature
	if s, _ := msg.Values["sig"].(string); json.Unmarshal([]byte(s), &sig) != nil {
		sig = attest.Signature{}
	}
	if err := w.jobKeys.Verify(purposeJob, []byte(raw), sig); err != nil {
		return fmt.Errorf("%w: job %s is %w", approvals.ErrForged, j.ID, err)
	}
	if age := time.Since(j.At); age > MaxJobAge || age < -time.Minute {
		return fmt.Errorf("%w: job %s was dispatched at %s; it may start only within %v of that", approvals.ErrForged,
			j.ID, j.At.UTC().Format(time.RFC3339), MaxJobAge)
	}
	key := seenKey(w.o.Prefix, w.o.Pool, j.ID)
	first, err := w.o.Redis.SetNX(ctx, key, msg.ID, 2*MaxJobAge).Result()
	if err != nil {
		return fmt.Errorf("record job %s: %w", j.ID, err)
	}
	if !first {
		if was, err := w.o.Redis.Get(ctx, key).Result(); err != nil || was != msg.ID {
			return fmt.Errorf("%w: job %s was already delivered as entry %s; this copy (%s) is a replay", approvals.ErrForged, j.ID, was, msg.ID)
		}
	}
	return nil
}

// SignedEntry is the stream entry serve would put on a pool's stream for j:
// for tools and tests that dispatch by hand.
func SignedEntry(s *attest.Signer, j Job) (map[string]any, error) {
	body, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	return signJob(s, body)
}
