package devstack

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// SentinelOptions configure a Sentinel-watched master with replicas.
type SentinelOptions struct {
	Dir    string // working directory; each server gets a folder in it; required
	Master string // the name Sentinel knows the master by; "twokey" if empty
	// MasterArgs are extra redis-server arguments for the master, and
	// ReplicaArgs one list per replica (its length is the number of
	// replicas), e.g. "--appendonly", "yes".
	MasterArgs  []string
	ReplicaArgs [][]string
	// DownAfter is how long the master must not answer before a failover;
	// 1 s if zero.
	DownAfter time.Duration
	Log       io.Writer // servers' output; nil discards it
}

// RedisSentinel is a master, its replicas and one Sentinel (quorum 1) on
// 127.0.0.1. Which server is the master changes after a failover.
type RedisSentinel struct {
	Name     string
	Master   *Redis
	Replicas []*Redis
	Sentinel *Sentinel
	// Links[i] carries the replication stream from the master to
	// Replicas[i]: partition it to make that replica lag.
	Links []*Link
	cli   string
}

// Sentinel is a running redis-server in Sentinel mode.
type Sentinel struct {
	Addr string
	proc *process
}

// Stop stops the Sentinel.
func (s *Sentinel) Stop() error { return s.proc.stop(5 * time.Second) }

// Addrs lists the Sentinels' addresses.
func (s *RedisSentinel) Addrs() []string { return []string{s.Sentinel.Addr} }

// Stop stops the Sentinel, then every server.
func (s *RedisSentinel) Stop() {
	if s.Sentinel != nil {
		_ = s.Sentinel.Stop()
	}
	for _, l := range s.Links {
		l.Close()
	}
	for _, r := range append([]*Redis{s.Master}, s.Replicas...) {
		if r != nil {
			_ = r.Stop()
		}
	}
}

// StartRedisSentinel starts a master, its replicas (each replicating
// through a Link) and a Sentinel watching them, and returns once the
// replicas are in sync and the Sentinel has seen every one of them.
// Sentinel leaves a replica on its Link for a minute (failover-timeout)
// before it would point it at the master's own address.
func StartRedisSentinel(ctx context.Context, o SentinelOptions) (*RedisSentinel, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("redis sentinel: Dir is required")
	}
	if o.Master == "" {
		o.Master = "twokey"
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli (Debian's redis-tools) is needed to watch a Sentinel setup: %w", err)
	}
	s := &RedisSentinel{Name: o.Master, cli: cli}
	fail := func(err error) (*RedisSentinel, error) {
		s.Stop()
		return nil, err
	}
	serverDir := func(name string) (string, error) {
		d := filepath.Join(o.Dir, name)
		return d, os.MkdirAll(d, 0o700)
	}
	d, err := serverDir("master")
	if err != nil {
		return fail(err)
	}
	if s.Master, err = StartRedis(ctx, RedisOptions{Dir: d, Args: o.MasterArgs, Log: o.Log}); err != nil {
		return fail(err)
	}
	host, port := "127.0.0.1", itoa(s.Master.opts.Port)
	for i, args := range o.ReplicaArgs {
		d, err := serverDir(fmt.Sprintf("replica%d", i))
		if err != nil {
			return fail(err)
		}
		link, err := NewLink(s.Master.Addr)
		if err != nil {
			return fail(err)
		}
		s.Links = append(s.Links, link)
		lhost, lport, _ := strings.Cut(link.Addr, ":")
		r, err := StartRedis(ctx, RedisOptions{Dir: d, Args: append([]string{"--replicaof", lhost, lport}, args...), Log: o.Log})
		if err != nil {
			return fail(err)
		}
		s.Replicas = append(s.Replicas, r)
	}
	// The replicas are in sync once the master lists each one online.
	if err := poll(ctx, 20*time.Second, func() (bool, string) {
		out, _ := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "info", "replication").Output()
		return strings.Count(string(out), "state=online") == len(o.ReplicaArgs), string(out)
	}); err != nil {
		return fail(fmt.Errorf("replicas not in sync: %w", err))
	}

	d, err = serverDir("sentinel")
	if err != nil {
		return fail(err)
	}
	sport, err := FreePort()
	if err != nil {
		return fail(err)
	}
	conf := filepath.Join(d, "sentinel.conf") // Sentinel rewrites it as the setup changes
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %[3]s %[6]d\nsentinel failover-timeout %[3]s 60000\n",
		sport, d, o.Master, host, port, o.DownAfter.Milliseconds())), 0o600); err != nil {
		return fail(err)
	}
	bin, err := Tool("redis-server")
	if err != nil {
		return fail(err)
	}
	p, err := start("redis-sentinel", bin, []string{conf, "--sentinel"}, os.Environ(), d, o.Log)
	if err != nil {
		return fail(err)
	}
	s.Sentinel = &Sentinel{Addr: fmt.Sprintf("127.0.0.1:%d", sport), proc: p}
	if err := p.waitReady(ctx, 10*time.Second, (&Redis{Addr: s.Sentinel.Addr}).ping); err != nil {
		return fail(err)
	}
	if err := poll(ctx, 20*time.Second, func() (bool, string) {
		out, _ := exec.CommandContext(ctx, cli, "-p", itoa(sport), "sentinel", "replicas", o.Master).Output()
		// Each replica as `name` … pairs; it counts once the Sentinel has
		// its INFO (priority, link to the master), not just its address.
		lines, n := strings.Split(string(out), "\n"), 0
		for i := 0; i+1 < len(lines); i += 2 {
			if lines[i] == "master-link-status" && lines[i+1] == "ok" {
				n++
			}
		}
		return n == len(o.ReplicaArgs), string(out)
	}); err != nil {
		return fail(fmt.Errorf("sentinel has not seen the replicas: %w", err))
	}
	return s, nil
}

// MasterAddr asks the Sentinel where the master is now.
func (s *RedisSentinel) MasterAddr(ctx context.Context) (string, error) {
	_, port, _ := strings.Cut(s.Sentinel.Addr, ":")
	out, err := exec.CommandContext(ctx, s.cli, "-p", port, "sentinel", "get-master-addr-by-name", s.Name).Output()
	if err != nil {
		return "", fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", fmt.Errorf("sentinel answered %q", out)
	}
	return f[0] + ":" + f[1], nil
}

// WaitForFailover waits until the Sentinel names a master other than from.
func (s *RedisSentinel) WaitForFailover(ctx context.Context, from string, timeout time.Duration) (string, error) {
	var now string
	err := poll(ctx, timeout, func() (bool, string) {
		now, _ = s.MasterAddr(ctx)
		return now != "" && now != from, now
	})
	return now, err
}

// poll calls ok every 50 ms until it reports true or timeout passes.
func poll(ctx context.Context, timeout time.Duration, ok func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, last := ok()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v: %s", timeout, strings.TrimSpace(last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
