package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/promstats"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/redisjobs"
	"github.com/twokey/twokey/runner/vaultcreds"
)

// check is one thing /readyz needs: nil when it is fine.
type check struct {
	name string
	fn   func(ctx context.Context) error
}

// serveMetrics serves /metrics, /healthz and /readyz on addr until ctx
// ends. /healthz answers while the process runs; /readyz runs every check
// (each within 2 s) and answers 503 naming the ones that failed.
func serveMetrics(ctx context.Context, addr string, m *promstats.Metrics, checks []check, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		var out strings.Builder
		ready := true
		for _, c := range checks {
			cctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			err := c.fn(cctx)
			cancel()
			if err != nil {
				ready = false
				fmt.Fprintf(&out, "%s: %v\n", c.name, err)
				continue
			}
			fmt.Fprintf(&out, "%s: ok\n", c.name)
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, out.String())
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("metrics listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// redisReady: Redis answers PING.
func redisReady(rdb redis.UniversalClient) check {
	return check{"redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}
}

// vaultReady: Vault is up, initialized and unsealed (a standby will do).
func vaultReady(address string) check {
	client := &http.Client{}
	return check{"vault", func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			strings.TrimSuffix(address, "/")+"/v1/sys/health?standbyok=true&perfstandbyok=true", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK, http.StatusTooManyRequests, 473:
			return nil
		case 501:
			return errors.New("not initialized")
		case 503:
			return errors.New("sealed")
		}
		return fmt.Errorf("health answered %s", resp.Status)
	}}
}

// queueDepths reads the queues of the config's runner pools.
func queueDepths(rdb redis.UniversalClient, cfg *config.Config) func(ctx context.Context) (map[string]promstats.Queue, error) {
	return func(ctx context.Context) (map[string]promstats.Queue, error) {
		out := map[string]promstats.Queue{}
		for _, p := range cfg.Pools {
			d, err := redisjobs.QueueDepth(ctx, rdb, keyPrefix, p.Name)
			if err != nil {
				return nil, fmt.Errorf("queue of pool %s: %w", p.Name, err)
			}
			out[p.Name] = promstats.Queue{Depth: d.Jobs, Oldest: d.Oldest}
		}
		return out, nil
	}
}

// timedCreds times the Vault mints of a runner for the metrics; every
// other method (break-glass, revocation) is the client's own.
type timedCreds struct {
	*vaultcreds.Client
	m *promstats.Metrics
}

func (c timedCreds) Mint(ctx context.Context, req runner.CredentialRequest) (*runner.Credential, error) {
	start := time.Now()
	cred, err := c.Client.Mint(ctx, req)
	c.m.Minted("run", time.Since(start), err)
	return cred, err
}

func (c timedCreds) MintWrapped(ctx context.Context, req runner.WrappedRequest) (runner.Wrapped, error) {
	start := time.Now()
	w, err := c.Client.MintWrapped(ctx, req)
	c.m.Minted("breakglass", time.Since(start), err)
	return w, err
}
