package devstack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RedisOptions configure a redis-server.
type RedisOptions struct {
	Dir  string    // working directory for the server's files; required
	Port int       // 0 picks a free port
	Args []string  // extra arguments, e.g. "--appendonly", "yes"
	Log  io.Writer // server output; nil discards it
}

// Redis is a running redis-server on 127.0.0.1. By default it keeps nothing
// on disk: no snapshots, no append-only file.
type Redis struct {
	Addr string
	opts RedisOptions
	bin  string
	proc *process
}

// StartRedis starts redis-server and waits until it answers PING.
func StartRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	bin, err := Tool("redis-server")
	if err != nil {
		return nil, err
	}
	if o.Dir == "" {
		return nil, fmt.Errorf("redis: Dir is required")
	}
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", o.Port), opts: o, bin: bin}
	return r, r.start(ctx)
}

func (r *Redis) start(ctx context.Context) error {
	args := append([]string{
		"--port", itoa(r.opts.Port), "--bind", "127.0.0.1", "--dir", r.opts.Dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
	}, r.opts.Args...)
	p, err := start("redis-server", r.bin, args, os.Environ(), r.opts.Dir, r.opts.Log)
	if err != nil {
		return err
	}
	r.proc = p
	return p.waitReady(ctx, 10*time.Second, r.ping)
}

// URL is a redis:// URL for the server.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Pid is the server's process ID.
func (r *Redis) Pid() int { return r.proc.Pid() }

// Stop shuts the server down.
func (r *Redis) Stop() error { return r.proc.stop(5 * time.Second) }

// Kill ends the server at once, like a crash or `SHUTDOWN NOSAVE`: whatever
// was not yet on disk is lost.
func (r *Redis) Kill() {
	_ = r.proc.Signal(syscall.SIGKILL)
	<-r.proc.done
}

// Restart starts the server again on the same port and directory after Stop
// or Kill.
func (r *Redis) Restart(ctx context.Context) error { return r.start(ctx) }

// Pause stops the server process (SIGSTOP); Resume continues it.
func (r *Redis) Pause() error  { return r.proc.Signal(syscall.SIGSTOP) }
func (r *Redis) Resume() error { return r.proc.Signal(syscall.SIGCONT) }

func (r *Redis) ping(ctx context.Context) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// A server whose default user is off (Redis ACLs) answers NOAUTH: it is up.
	if !strings.HasPrefix(line, "+PONG") && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
	}
	return nil
}

// ShutdownNoSave stops the server with SHUTDOWN NOSAVE — no final snapshot;
// only what the append-only file already holds survives — and waits for it
// to exit.
func (r *Redis) ShutdownNoSave(ctx context.Context) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("SHUTDOWN NOSAVE\r\n")); err != nil {
		return err
	}
	select {
	case <-r.proc.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redis did not shut down")
	}
}

// RedisCluster is a Redis Cluster of masters on 127.0.0.1.
type RedisCluster struct {
	Nodes []*Redis
}

// replicasInStep counts the nodes that are replicas with their link to
// the master up: a replica still taking its first copy acknowledges no
// write.
func (c *RedisCluster) replicasInStep(redisCLI func(...string) *exec.Cmd) int {
	n := 0
	for _, node := range c.Nodes {
		out, _ := redisCLI("-h", "127.0.0.1", "-p", itoa(node.opts.Port), "info", "replication").Output()
		if strings.Contains(string(out), "role:slave") && strings.Contains(string(out), "master_link_status:up") {
			n++
		}
	}
	return n
}

// Addrs lists the nodes' addresses.
func (c *RedisCluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Stop stops every node.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		_ = n.Stop()
	}
}

// StartRedisCluster starts n masters with cluster mode on, joins them with
// `redis-cli --cluster create` and waits until the cluster is ok.
func StartRedisCluster(ctx context.Context, dir string, n int) (*RedisCluster, error) {
	return StartRedisClusterWith(ctx, RedisClusterOptions{Dir: dir, Masters: n})
}

// RedisClusterOptions configure a Redis Cluster.
type RedisClusterOptions struct {
	Dir      string // each node gets a folder in it; required
	Masters  int
	Replicas int // per master
	// NodeArgs gives node i extra redis-server arguments, e.g.
	// "--appendonly", "yes". Nodes 0…Masters-1 become the masters, and
	// redis-cli makes the rest their replicas.
	NodeArgs func(i int) []string
	// User and Password log redis-cli in, where NodeArgs load an ACL
	// file whose default user is off.
	User, Password string
}

// StartRedisClusterWith starts o.Masters×(1+o.Replicas) nodes with cluster
// mode on, joins them with `redis-cli --cluster create` and waits until the
// cluster is ok.
func StartRedisClusterWith(ctx context.Context, o RedisClusterOptions) (*RedisCluster, error) {
	c := &RedisCluster{}
	for i := range o.Masters * (1 + o.Replicas) {
		nodeDir := filepath.Join(o.Dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			return nil, err
		}
		args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}
		if o.NodeArgs != nil {
			args = append(args, o.NodeArgs(i)...)
		}
		r, err := StartRedis(ctx, RedisOptions{Dir: nodeDir, Args: args})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli (Debian's redis-tools) is needed to form a cluster: %w", err)
	}
	redisCLI := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, cli, args...)
		if o.User != "" {
			cmd.Args = append([]string{cli, "--user", o.User, "--no-auth-warning"}, args...)
			cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+o.Password)
		}
		return cmd
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", itoa(o.Replicas), "--cluster-yes")
	if out, err := redisCLI(args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := redisCLI("-h", "127.0.0.1", "-p", itoa(c.Nodes[0].opts.Port), "cluster", "info").Output()
		nodes, _ := redisCLI("-h", "127.0.0.1", "-p", itoa(c.Nodes[0].opts.Port), "cluster", "nodes").Output()
		if strings.Contains(string(out), "cluster_state:ok") && strings.Count(string(nodes), "slave") == o.Masters*o.Replicas &&
			c.replicasInStep(redisCLI) == o.Masters*o.Replicas {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("cluster not ok: %s", out)
		}
	}
}
