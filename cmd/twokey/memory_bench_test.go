package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveProcess builds the production binary (no demo) and starts `twokey
// serve` on the stack as a process of its own, so that its memory is its
// own. It returns the process's ID.
func (s *stack) serveProcess(b *testing.B) int {
	bin := filepath.Join(b.TempDir(), "twokey")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", s.config, "--log-format", "text", "--log-level", "warn")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "GITHUB_TOKEN", "TWOKEY_PLAN_KEY", "TWOKEY_REDIS_PASSWORD"} {
		cmd.Env = append(cmd.Env, k+"="+s.env(k))
	}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	before := s.slack.Connections()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	if err := s.slack.WaitConnected(before+1, 30*time.Second); err != nil {
		b.Fatalf("serve did not connect: %v\n%s", err, s.logs.String())
	}
	return cmd.Process.Pid
}

// memory reads a process's VmRSS and VmHWM (its peak) from /proc, in MiB.
func memory(b *testing.B, pid int) (rss, peak float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			b.Fatal(err)
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			peak = kb / 1024
		}
	}
	return rss, peak
}

// resetPeak starts a process's VmHWM again from its current RSS.
func resetPeak(b *testing.B, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkServeMemory runs the production binary's serve as a process of
// its own: its resident memory idle (connected, nothing to do), then for
// plans of 20, 500 and 5,000 terraform_data resources, envelope → buttons
// and → ready for review against raw `init && plan -out` on the same
// configuration, and serve's peak resident memory during each plan.
//
//	go test -run '^$' -bench BenchmarkServeMemory -benchtime 1x ./cmd/twokey
func BenchmarkServeMemory(b *testing.B) {
	s := newStack(b)
	pid := s.serveProcess(b)
	time.Sleep(2 * time.Second) // settled: connected, swept once
	idle, _ := memory(b, pid)
	b.ReportMetric(idle, "idle-MiB")
	b.Logf("serve idle: %.1f MiB resident", idle)
	raw := newRawPlanner(b)
	pr := 0
	for b.Loop() {
		for _, n := range []int{20, 500, 5000} {
			pr++
			tf := benchTF(fmt.Sprint("pr-", pr), n)
			s.openPRWith(pr, tf)
			resetPeak(b, pid)
			buttons, ready, msg := s.benchPlan("staging", pr)
			_, peak := memory(b, pid)
			s.click(alice, msg, reject)
			s.waitTS(msg.TS, "Rejected")
			r := raw.plan(b, tf)
			b.ReportMetric(peak, fmt.Sprintf("peak-%d-MiB", n))
			b.ReportMetric(ms(ready), fmt.Sprintf("ready-%d-ms", n))
			b.ReportMetric(float64(ready)/float64(r), fmt.Sprintf("ready-%d-ratio", n))
			b.Logf("%d resources: buttons %v (%.2f× raw), ready for review %v (%.2f×), raw init && plan %v; serve peak %.1f MiB",
				n, buttons.Round(time.Millisecond), float64(buttons)/float64(r), ready.Round(time.Millisecond),
				float64(ready)/float64(r), r.Round(time.Millisecond), peak)
		}
	}
}
