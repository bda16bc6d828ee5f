package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

var full = flag.Bool("twokey.full", false, "run the randomized end-to-end tests at full size")

// mainArgsEnv makes the test binary run `twokey` with these arguments
// instead of the tests: the end-to-end tests start real bot processes this
// way, to kill them.
const mainArgsEnv = "TWOKEY_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if raw := os.Getenv(mainArgsEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := Main(ctx, args, os.Stdout, os.Stderr, os.Getenv)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// botProcess is `twokey serve` in its own OS process.
type botProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startBotProcess starts `twokey serve --config config` as a child process
// with the bot's usual environment and waits until it is connected to Slack.
func (s *stack) startBotProcess(config string, flags ...string) *botProcess {
	s.t.Helper()
	env := map[string]string{}
	for _, k := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "GITHUB_TOKEN", "TWOKEY_PLAN_KEY"} {
		env[k] = s.env(k)
	}
	before := s.slack.Connections()
	p := s.startProcess(append([]string{"serve", "--config", config}, flags...), env)
	if err := s.slack.WaitConnected(before+1, 30*time.Second); err != nil {
		s.t.Fatalf("bot process did not connect: %v\nlogs:\n%s", err, s.logs.String())
	}
	return p
}

// startProcess starts `twokey <args>` as a child process whose environment
// is exactly env (plus PATH and HOME), so a test controls which
// credentials it holds.
func (s *stack) startProcess(args []string, env map[string]string) *botProcess {
	s.t.Helper()
	full, _ := json.Marshal(append(args, "--log-format", "text", "--log-level", "debug"))
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{mainArgsEnv + "=" + string(full), "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	p := &botProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	s.t.Cleanup(func() { p.kill() })
	return p
}

// kill ends the process at once (SIGKILL): no cleanup runs.
func (p *botProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
