//go:build demo

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/devstack/stacktest"
)

// startDemo runs `twokey demo` in this process and returns the page's URL
// and what it printed.
func startDemo(t *testing.T) (string, *syncBuffer) {
	t.Helper()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"demo", "--listen", addr}, out, out, os.Getenv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("demo did not stop")
		}
	})
	url := "http://" + addr + "/ui/"
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if connected(url) {
			return url, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo did not come up:\n%s", out.String())
		}
	}
}

// connected reports whether the page answers and the bot is connected.
func connected(url string) bool {
	resp, err := http.Get(url + "api/state")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var s struct{ Connections int }
	return json.NewDecoder(resp.Body).Decode(&s) == nil && s.Connections > 0
}

// TestDemoInBrowser plays the demo in headless Chromium: alice plans,
// alice's own approval is refused, bob and carol approve, and the thread
// shows the apply succeeded. The screenshot is kept as an artifact.
func TestDemoInBrowser(t *testing.T) {
	url, out := startDemo(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(stacktest.Tool(t, "chromium")),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1440, 900),
		chromedp.Flag("hide-scrollbars", true))
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	as := func(user string) chromedp.Action[chromedp.Void] {
		return chromedp.Click(chromedp.CSS(fmt.Sprintf(`#users .nav-item[data-user=%q]`, user)))
	}
	approveButton := chromedp.CSS(`#messages button[data-action="twokey_approve"]`)
	waitText := func(sel, text string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText.includes(%q)`, sel, text),
			chromedp.WithPollingTimeout(60*time.Second))
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#connection.up`)),
		as("alice"),
		chromedp.SendKeys(chromedp.ID("composer-input"), "/tf plan staging pr-1\n"),
		chromedp.WaitVisible(approveButton),
		waitText("#messages", "terraform_data.cache"),
		chromedp.Click(approveButton),
		waitText("#messages", "you cannot approve it"),
		as("bob"),
		chromedp.Click(approveButton),
		waitText("#messages", "1 more needed"),
		as("carol"),
		chromedp.Click(approveButton),
		waitText("#messages", "Applied"),
		chromedp.Click(chromedp.CSS(`#messages .replies`)),
		waitText("#thread", "Apply complete: 1 added, 1 changed, 0 destroyed"),
		chromedp.Sleep(300*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact := filepath.Join(artifactsDir(t), "demo.png")
	if err := os.WriteFile(artifact, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", artifact)

	// erin, on call, asks for break-glass in the form; bob approves in
	// #security; the wrapped token waits in erin's DMs.
	steps := []struct {
		name string
		do   chromedp.Action[chromedp.Void]
	}{
		{"as erin", as("erin")},
		{"type", chromedp.SendKeys(chromedp.ID("composer-input"), "/tf breakglass\n")},
		{"form", chromedp.WaitVisible(chromedp.ID("modal-form"))},
		{"env", chromedp.SetValue(chromedp.CSS(`#modal-body select[name="bg_env"]`), "infra/prod")},
		{"duration", chromedp.SendKeys(chromedp.CSS(`#modal-body input[name="bg_duration"]`), "2h")},
		{"reason", chromedp.SendKeys(chromedp.CSS(`#modal-body textarea[name="bg_reason"]`), "db failover stuck, need to resize")},
		{"submit", chromedp.Click(chromedp.ID("modal-submit"))},
		{"cap", waitText("#modal-body .field-error", "at most 1h")}, // over the cap: the form says so and stays open
		{"duration again", chromedp.SetValue(chromedp.CSS(`#modal-body input[name="bg_duration"]`), "30m")},
		{"submit again", chromedp.Click(chromedp.ID("modal-submit"))},
		{"form closed", chromedp.WaitNotVisible(chromedp.ID("modal-form"))},
		{"#security", chromedp.Click(chromedp.CSS(`#channels .nav-item[data-channel="security"]`))},
		{"request", waitText("#messages", "waiting for approval")},
		{"as bob", as("bob")},
		{"approve", chromedp.Click(chromedp.CSS(`#messages button[data-action="twokey_bg_approve"]`))},
		{"delivered", waitText("#messages", "token delivered")},
		{"settle", chromedp.Sleep(300 * time.Millisecond)},
	}
	for _, step := range steps {
		if err = chromedp.Do(ctx, step.do); err != nil {
			err = fmt.Errorf("%s: %w", step.name, err)
			break
		}
	}
	if err != nil {
		t.Fatalf("browser, break-glass: %v", err)
	}
	shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifactsDir(t), "breakglass.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx,
		as("erin"),
		chromedp.Click(chromedp.CSS(`#dms .nav-item[data-channel="dm"]`)),
		waitText("#messages", "vault unwrap"),
	)
	if err != nil {
		t.Fatalf("browser, break-glass DM: %v", err)
	}

	// The banner's audit command verifies the chain the demo just wrote.
	m := regexp.MustCompile(`audit verify --config (\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the banner does not say how to verify the record:\n%s", out)
	}
	var verify bytes.Buffer
	if code := Main(context.Background(), []string{"audit", "verify", "--config", m[1]}, &verify, &verify, os.Getenv); code != 0 ||
		!strings.Contains(verify.String(), "audit chain intact") {
		t.Fatalf("audit verify on the demo: %d %s", code, verify.String())
	}
	t.Log(strings.TrimSpace(verify.String()))
}

// artifactsDir is where tests keep what a person may want to look at.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root, err := devstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "testdata", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDemoStopsEverything starts `twokey demo` as its own process, checks
// that the page answers, interrupts it (Ctrl-C), and checks that every
// process it started is gone and its files are removed.
func TestDemoStopsEverything(t *testing.T) {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal([]string{"demo", "--listen", fmt.Sprintf("127.0.0.1:%d", port)})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+string(args))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var logPath string
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if m := regexp.MustCompile(`twokey's log: (\S+)`).FindStringSubmatch(lines.Text()); m != nil {
			logPath = m[1]
			break
		}
	}
	go func() {
		for lines.Scan() {
		}
	}()
	if logPath == "" {
		t.Fatal("demo never said it was running")
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/ui/", port)
	for deadline := time.Now().Add(30 * time.Second); !connected(url); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("page does not answer")
		}
	}
	children := descendants(cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("the demo started no processes (expected at least vault)")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop on SIGINT")
	}
	for pid, name := range children {
		if alive(pid) {
			t.Errorf("process %d (%s) still running after the demo stopped", pid, name)
		}
	}
	if _, err := os.Stat(filepath.Dir(logPath)); !os.IsNotExist(err) {
		t.Errorf("demo files left in %s", filepath.Dir(logPath))
	}
	t.Logf("stopped %d child processes: %v", len(children), children)
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) map[int]string {
	parent := map[int]int{}
	names := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …
		s := string(b)
		close := strings.LastIndexByte(s, ')')
		fields := strings.Fields(s[close+1:])
		if len(fields) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(fields[1])
		parent[p] = pp
		names[p] = s[strings.IndexByte(s, '(')+1 : close]
	}
	out := map[int]string{}
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out[p] = names[p]
				break
			}
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}
