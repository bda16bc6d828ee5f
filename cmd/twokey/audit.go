package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/twokey/twokey/config"
)

// auditCmd is `twokey audit verify` and `twokey audit export`.
func auditCmd(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "export") {
		return errors.New("usage: twokey audit verify|export [--config file] [--head file]… [--since 720h] [--format jsonl]")
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	path := fs.String("config", "twokey.yaml", "path to the config file")
	since := fs.Duration("since", 0, "export: only events this recent (e.g. 720h); 0 exports all")
	format := fs.String("format", "jsonl", "export: jsonl (one JSON event per line)")
	var heads headFiles
	fs.Var(&heads, "head", "verify: an audit.file sink of a twokey process (repeatable); its newest event must be in the chain. Default: the config's audit.file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%s:\n%w", *path, err)
	}
	secrets, err := cfg.LoadSecrets(getenv, config.Needs{})
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg.Redis, secrets.RedisPassword)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if len(heads) == 0 && cfg.Audit.File != "" {
		heads = append(heads, cfg.Audit.File)
	}
	cfg.Audit.File = "" // reading only
	k, err := loadKeys(cfg, slog.New(slog.DiscardHandler), "reader")
	if err != nil {
		return err
	}
	log, err := openAudit(rdb, cfg, nil, k)
	if err != nil {
		return err
	}
	switch args[0] {
	case "verify":
		n, err := log.Verify(ctx)
		if err != nil {
			return fmt.Errorf("%d events read: %w", n, err)
		}
		for _, h := range heads {
			if err := log.VerifyHead(ctx, h); err != nil {
				return fmt.Errorf("%d events read: %w", n, err)
			}
		}
		signed := "signatures checked against " + strings.Join(k.audit.IDs(), ", ")
		if k.audit.Len() == 0 {
			signed = "signatures NOT checked: the config lists no signing.serve_keys or signing.runner_keys"
		}
		fmt.Fprintf(stdout, "audit chain intact: %d events verified (%s; %d head file(s) matched)\n", n, signed, len(heads))
		return nil
	}
	if *format != "jsonl" {
		return fmt.Errorf("--format %q: only jsonl is supported", *format)
	}
	from := time.Time{}
	if *since > 0 {
		from = time.Now().Add(-*since)
	}
	events, err := log.Since(ctx, from)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

// headFiles is a repeatable --head flag.
type headFiles []string

func (h *headFiles) String() string     { return strings.Join(*h, ",") }
func (h *headFiles) Set(v string) error { *h = append(*h, v); return nil }
