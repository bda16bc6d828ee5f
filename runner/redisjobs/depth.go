package redisjobs

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Depth is one pool's queue as a metric sees it.
type Depth struct {
	// Jobs are the jobs queued and not yet taken by a worker, plus those
	// taken and not yet finished.
	Jobs int64
	// Oldest is when the oldest of them was queued; zero when there are none.
	Oldest time.Time
}

// QueueDepth reads pool's queue: the consumer group's lag and pending
// entries, and the oldest of them (a stream ID starts with its time).
func QueueDepth(ctx context.Context, rdb redis.UniversalClient, prefix, pool string) (Depth, error) {
	stream := streamKey(prefix, pool)
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil && strings.Contains(err.Error(), "no such key") {
		return Depth{}, nil // nothing was ever queued
	}
	if err != nil {
		return Depth{}, err
	}
	var g *redis.XInfoGroup
	for i := range groups {
		if groups[i].Name == group {
			g = &groups[i]
		}
	}
	var d Depth
	older := func(id string) {
		if t, ok := idTime(id); ok && (d.Oldest.IsZero() || t.Before(d.Oldest)) {
			d.Oldest = t
		}
	}
	waitingFrom := "-"
	if g != nil {
		d.Jobs = g.Pending
		if g.Lag > 0 {
			d.Jobs += g.Lag
		}
		if g.Pending > 0 {
			p, err := rdb.XPending(ctx, stream, group).Result()
			if err != nil {
				return Depth{}, err
			}
			older(p.Lower)
		}
		if g.Lag <= 0 {
			return d, nil
		}
		waitingFrom = "(" + g.LastDeliveredID
	} else {
		n, err := rdb.XLen(ctx, stream).Result()
		if err != nil {
			return Depth{}, err
		}
		d.Jobs = n
	}
	first, err := rdb.XRangeN(ctx, stream, waitingFrom, "+", 1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Depth{}, err
	}
	if len(first) > 0 {
		older(first[0].ID)
	}
	return d, nil
}

// idTime is when a stream entry was added: its ID's first part.
func idTime(id string) (time.Time, bool) {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}
