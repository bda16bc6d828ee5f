package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner/redislock"
)

// replicaWait is how long a lock or fence write waits for a replica on a
// Sentinel or Cluster setup; under the client's 2 s read timeout.
const replicaWait = time.Second

// lockReplicaWait makes lock and fence writes wait for a replica (WAIT) on
// a Sentinel or Cluster setup, where a replica is promoted when its master
// fails and replication is asynchronous: without it, a failover can forget
// a lock or a fenced ledger record that twokey was told was written.
func lockReplicaWait(c config.Redis) redislock.Option {
	if len(c.Sentinel.Addrs) > 0 || len(c.Cluster.Addrs) > 0 {
		return redislock.WithReplicaWait(replicaWait)
	}
	return redislock.WithReplicaWait(0)
}

// checkDurable refuses a Redis that could lose acknowledged writes. A held
// lock or a fencing counter forgotten by a restart would let a second holder
// in while the first still works; with appendonly and appendfsync always,
// every write twokey made is on disk before Redis answers it.
//
// Every server that holds twokey's data now or could after a failover is
// asked: one Redis; on a Cluster every master and replica; on Sentinel
// the master and every replica the Sentinels know of, except those with
// replica-priority 0, which Sentinel never promotes.
//
// c.Durability "asserted" is the operator's word that a managed service
// persists every write (such services refuse CONFIG): a refused CONFIG GET
// is then taken as that service, but a CONFIG GET that answers must still
// show it.
func checkDurable(ctx context.Context, rdb redis.UniversalClient, c config.Redis, password config.Secret) error {
	asserted := c.Durability == "asserted"
	var (
		nodes []redisNode
		err   error
	)
	switch cc, cluster := rdb.(*redis.ClusterClient); {
	case len(c.Sentinel.Addrs) > 0:
		nodes, err = sentinelNodes(ctx, c)
	case cluster:
		nodes, err = clusterNodes(ctx, cc)
	default:
		if err := checkNode(ctx, rdb, asserted); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	opts, err := redis.ParseURL(c.URL)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	// The master first, then the replicas, each by address.
	slices.SortFunc(nodes, func(a, b redisNode) int {
		return cmp.Or(cmp.Compare(a.role, b.role), cmp.Compare(a.addr, b.addr))
	})
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		o := *opts // the user, TLS and database the clients use
		o.Addr, o.Password = n.addr, password.Reveal()
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.MaxRetries = 2*time.Second, 2*time.Second, 2*time.Second, -1
		wg.Go(func() {
			rc := redis.NewClient(&o)
			defer rc.Close()
			if err := checkNode(ctx, rc, asserted); err != nil {
				errs[i] = fmt.Errorf("redis %s %s: %w", n.role, n.addr, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// redisNode is a server that holds twokey's data, or could after a failover.
type redisNode struct{ role, addr string }

// clusterNodes lists every node of a Redis Cluster from CLUSTER NODES: the
// masters and all their replicas, also those still loading or failed,
// which CLUSTER SLOTS (and so the client's ForEachShard) leaves out. Every
// master that holds slots needs a replica, because lock and fence writes
// wait for one (lockReplicaWait).
func clusterNodes(ctx context.Context, cc *redis.ClusterClient) ([]redisNode, error) {
	out, err := cc.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redis cluster: cannot list the nodes to check durability: %w", err)
	}
	return parseClusterNodes(out)
}

// parseClusterNodes reads CLUSTER NODES' answer for clusterNodes. A replica
// the cluster marks failing (fail, or fail? before the others agree) is no
// replica: it acknowledges no write.
func parseClusterNodes(out string) ([]redisNode, error) {
	var (
		nodes    []redisNode
		serving  = map[string]string{} // the id of each master that holds slots → its address
		replicas = map[string]bool{}   // the ids of the masters with a replica
	)
	for line := range strings.Lines(out) {
		// <id> <ip:port@cport[,hostname]> <flags> <master id> <ping> <pong> <epoch> <link> <slot>…
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		if strings.HasPrefix(addr, ":") || strings.Contains(f[2], "noaddr") || strings.Contains(f[2], "handshake") {
			continue // a node not yet, or no longer, known by address
		}
		role := "replica"
		if slices.Contains(strings.Split(f[2], ","), "master") {
			role = "master"
			if len(f) > 8 {
				serving[f[0]] = addr
			}
		} else if len(f) > 3 && !slices.ContainsFunc(strings.Split(f[2], ","), func(flag string) bool { return strings.HasPrefix(flag, "fail") }) {
			replicas[f[3]] = true
		}
		nodes = append(nodes, redisNode{role, addr})
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("redis cluster: CLUSTER NODES named no node")
	}
	var alone []string
	for id, addr := range serving {
		if !replicas[id] {
			alone = append(alone, addr)
		}
	}
	if len(alone) > 0 {
		slices.Sort(alone)
		return nil, fmt.Errorf("redis cluster: master %s has no replica; twokey's lock and fence writes wait for a replica of their slot's master to acknowledge them (WAIT), so give every master one",
			strings.Join(alone, ", "))
	}
	return nodes, nil
}

// checkNode checks one server's persistence settings.
func checkNode(ctx context.Context, rdb redis.Cmdable, asserted bool) error {
	got := map[string]string{}
	for _, key := range []string{"appendonly", "appendfsync"} {
		v, err := rdb.ConfigGet(ctx, key).Result()
		var rerr redis.Error
		if asserted && (errors.As(err, &rerr) || err == nil && v[key] == "") {
			return nil // the service refuses (or hides) CONFIG; durability is asserted
		}
		if err != nil {
			return fmt.Errorf("cannot read %s to check durability (%w); if the service refuses CONFIG and persists every write, set redis.durability: asserted", key, err)
		}
		got[key] = v[key]
	}
	if got["appendonly"] != "yes" || got["appendfsync"] != "always" {
		return fmt.Errorf("appendonly=%q appendfsync=%q, but twokey needs appendonly yes and appendfsync always "+
			"so that a Redis restart cannot forget a held lock or reset fencing numbers (or set redis.durability: relaxed)",
			got["appendonly"], got["appendfsync"])
	}
	return nil
}

// sentinelNodes asks every Sentinel for the master and its replicas, and
// returns the union: a Sentinel that lags may not know a replica yet. At
// least one Sentinel must answer, and the master needs a replica, because
// lock and fence writes wait for one (lockReplicaWait).
func sentinelNodes(ctx context.Context, c config.Redis) ([]redisNode, error) {
	seen := map[string]bool{}
	var (
		nodes    []redisNode
		errs     []error
		answered bool
		replicas int
	)
	add := func(role, addr string) {
		if !seen[addr] {
			seen[addr] = true
			nodes = append(nodes, redisNode{role, addr})
			if role == "replica" {
				replicas++
			}
		}
	}
	for _, a := range c.Sentinel.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
		master, err := sc.GetMasterAddrByName(ctx, c.Sentinel.Master).Result()
		var reps []map[string]string
		if err == nil {
			reps, err = sc.Replicas(ctx, c.Sentinel.Master).Result()
		}
		sc.Close()
		if err != nil || len(master) != 2 {
			errs = append(errs, fmt.Errorf("sentinel %s: %v", a, err))
			continue
		}
		answered = true
		add("master", net.JoinHostPort(master[0], master[1]))
		for _, r := range reps {
			if cmp.Or(r["replica-priority"], r["slave-priority"]) == "0" {
				continue // never promoted
			}
			add("replica", net.JoinHostPort(r["ip"], r["port"]))
		}
	}
	if !answered {
		return nil, fmt.Errorf("redis sentinel: no Sentinel named master %q and its replicas to check durability: %w", c.Sentinel.Master, errors.Join(errs...))
	}
	if replicas == 0 {
		return nil, fmt.Errorf("redis sentinel: master %q has no replica that Sentinel could promote; twokey's lock and fence writes wait for a replica to acknowledge them (WAIT), so add one, or use a single Redis without Sentinel", c.Sentinel.Master)
	}
	return nodes, nil
}
