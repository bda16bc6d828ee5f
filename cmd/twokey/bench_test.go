package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/devstack/stacktest"
)

// The benchmarks here measure what people feel, from Slack's side: a real
// `twokey serve` (embedded runner, sandbox on, Vault plan credentials,
// Redis, git) driven through the local Slack, against raw terraform on the
// same configuration, interleaved so that both see the same machine. Each
// iteration is a batch; run several:
//
//	go test -run '^$' -bench 'BenchmarkSlack' -benchtime 8x ./cmd/twokey
//
// They report medians and spreads with b.ReportMetric and log each batch;
// ns/op is the time of a whole batch and means little. Nothing here
// asserts on time.

// benchResources is how many terraform_data resources the benchmark
// configuration plans.
const benchResources = 20

// benchPerBatch is how many plans of each kind a batch interleaves.
const benchPerBatch = 3

// benchTF is the benchmark's configuration: n terraform_data resources.
func benchTF(tag string, n int) string {
	var tf strings.Builder
	tf.WriteString("terraform {\n  backend \"local\" {}\n}\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&tf, "\nresource \"terraform_data\" \"r%02d\" {\n  input = \"%s-%d\"\n}\n", i, tag, i)
	}
	return tf.String()
}

// rawPlanner runs terraform init && terraform plan -out in a fresh
// directory, unsandboxed, with nothing around them: the floor.
type rawPlanner struct {
	bin, dir string
	n        int
	mu       sync.Mutex
}

func newRawPlanner(b *testing.B) *rawPlanner {
	return &rawPlanner{bin: stacktest.Tool(b, "terraform"), dir: b.TempDir()}
}

// plan runs init && plan -out on mainTF and returns how long they took.
func (r *rawPlanner) plan(b *testing.B, mainTF string) time.Duration {
	r.mu.Lock()
	r.n++
	work := filepath.Join(r.dir, strconv.Itoa(r.n))
	r.mu.Unlock()
	if err := os.MkdirAll(work, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(mainTF), 0o600); err != nil {
		b.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work, "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	start := time.Now()
	for _, args := range [][]string{
		{"init", "-input=false", "-backend-config=path=" + filepath.Join(work, "terraform.tfstate")},
		{"plan", "-input=false", "-out=" + filepath.Join(work, "plan.tfplan")},
	} {
		cmd := exec.Command(r.bin, args...)
		cmd.Dir, cmd.Env = work, env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Errorf("raw terraform %s: %v: %s", args[0], err, out)
			return 0
		}
	}
	return time.Since(start)
}

// benchPlan pushes `/tf plan env pr-n` and returns the time from the
// envelope being pushed to the plan message carrying its buttons (terraform
// plan is done and its changes are shown), and to the plan being ready for
// review (the saved plan read back, policy checked: Approve counts).
func (s *stack) benchPlan(env string, n int) (buttons, ready time.Duration, msg slacksim.Message) {
	s.t.Helper()
	start := time.Now()
	if _, err := s.slack.SlashCommand(alice, channel, fmt.Sprintf("plan %s pr-%d", env, n)); err != nil {
		s.t.Fatal(err)
	}
	label := fmt.Sprintf("PR #%d", n)
	// Each message is read once per change (the local Slack calls this
	// with its lock held, so a slow look would slow twokey down).
	looked := map[string]int64{} // ts → the change last read
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.ThreadTS != "" || m.Ephemeral || looked[m.TS] == m.Seq {
				continue
			}
			looked[m.TS] = m.Seq
			// Another plan's message is passed over before its blocks are
			// parsed: ten waiters look at every change.
			if !strings.Contains(m.Text, label) && !bytes.Contains(m.Blocks, []byte(label)) {
				continue
			}
			content := m.Content()
			if !strings.Contains(content, label) || !strings.Contains(content, env) {
				continue
			}
			if buttons == 0 && slices.ContainsFunc(m.Buttons(), func(b slacksim.Button) bool { return b.ActionID == approve }) {
				buttons = time.Since(start)
			}
			if strings.Contains(content, "Plan ready for review") {
				ready, msg = time.Since(start), m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no plan ready for review for %s in %s\nmessages:\n%s\nlogs:\n%s", label, env, s.dump(), s.logs.String())
	}
	if buttons == 0 {
		buttons = ready // the buttons came with the ready plan, between two looks
	}
	return buttons, ready, msg
}

// spread is the min, median and max of ds.
func spread(ds []time.Duration) (lo, med, hi time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func ratioSpread(rs []float64) (lo, med, hi float64) {
	s := slices.Clone(rs)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report reports the batches' medians of twokey and raw, and their ratios.
func report(b *testing.B, what, prefix string, tw, raw []time.Duration) {
	ratios := make([]float64, len(tw))
	for i := range tw {
		ratios[i] = float64(tw[i]) / float64(raw[i])
	}
	tl, tm, th := spread(tw)
	rl, rm, rh := spread(raw)
	ql, qm, qh := ratioSpread(ratios)
	b.ReportMetric(ms(tm), prefix+"twokey-ms")
	b.ReportMetric(ms(tl), prefix+"twokey-min-ms")
	b.ReportMetric(ms(th), prefix+"twokey-max-ms")
	b.ReportMetric(ms(rm), "raw-ms")
	b.ReportMetric(ms(rl), "raw-min-ms")
	b.ReportMetric(ms(rh), "raw-max-ms")
	b.ReportMetric(qm, prefix+"ratio")
	b.ReportMetric(ql, prefix+"ratio-min")
	b.ReportMetric(qh, prefix+"ratio-max")
	b.Logf("%s, %d batches: twokey median %.0f ms (batches %.0f–%.0f), raw init && plan %.0f ms (%.0f–%.0f), ratio %.2f× (%.2f–%.2f)",
		what, len(tw), ms(tm), ms(tl), ms(th), ms(rm), ms(rl), ms(rh), qm, ql, qh)
}

// BenchmarkSlackPlan: the slash-command envelope pushed over Socket Mode →
// the plan message with its buttons, for a pull request of 20
// terraform_data resources, against raw `terraform init && terraform plan
// -out` in a fresh directory on the same configuration. Each batch
// interleaves benchPerBatch of each and compares their medians.
func BenchmarkSlackPlan(b *testing.B) {
	s := newStack(b)
	s.startBot("--log-level", "info")
	raw := newRawPlanner(b)
	pr := 0
	// One plan first, not counted in the batches: the bot's first in the
	// environment since it started (Vault, git and Redis warm up too).
	pr++
	s.openPRWith(pr, benchTF(fmt.Sprint("pr-", pr), benchResources))
	first, _, msg := s.benchPlan("staging", pr)
	s.click(alice, msg, reject)
	s.waitTS(msg.TS, "Rejected")
	firstRaw := raw.plan(b, benchTF("warm", benchResources))
	b.ReportMetric(ms(first), "first-ms")
	b.Logf("the first plan after serve started: %.0f ms (raw init && plan %.0f ms)", ms(first), ms(firstRaw))

	var tw, tr, rw []time.Duration
	for b.Loop() {
		var t, ready, r []time.Duration
		for range benchPerBatch {
			pr++
			tf := benchTF(fmt.Sprint("pr-", pr), benchResources)
			s.openPRWith(pr, tf)
			buttons, rd, msg := s.benchPlan("staging", pr)
			t, ready = append(t, buttons), append(ready, rd)
			s.click(alice, msg, reject)
			s.waitTS(msg.TS, "Rejected")
			r = append(r, raw.plan(b, tf))
		}
		_, tm, _ := spread(t)
		_, dm, _ := spread(ready)
		_, rm, _ := spread(r)
		b.Logf("batch %d: buttons %v, ready %v, raw %v: medians %.0f and %.0f ms against %.0f ms (%.2f×, %.2f×)", len(tw)+1,
			roundAll(t), roundAll(ready), roundAll(r), ms(tm), ms(dm), ms(rm), float64(tm)/float64(rm), float64(dm)/float64(rm))
		tw, tr, rw = append(tw, tm), append(tr, dm), append(rw, rm)
	}
	report(b, "envelope → plan message with buttons", "", tw, rw)
	report(b, "envelope → plan ready for review (Approve counts)", "ready-", tr, rw)
}

// BenchmarkSlackPlanConcurrent: ten `/tf plan` envelopes for ten
// environments pushed at once → the last of the ten plan messages with
// buttons (the makespan), against ten raw `init && plan -out` run at once.
func BenchmarkSlackPlanConcurrent(b *testing.B) {
	const envs = 10
	s := newStack(b)
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(b, "terraform"))
	staging := cfg.Projects[0].Environments[0]
	var list []config.Environment
	for i := range envs {
		e := staging
		e.Name = fmt.Sprintf("bench%d", i)
		e.BackendConfig = map[string]string{"path": filepath.Join(s.out, e.Name+".tfstate")}
		e.BreakGlass = nil
		list = append(list, e)
	}
	cfg.Projects[0].Environments = list
	s.config = s.write("bench.yaml", cfg)
	s.startBot("--log-level", "info")
	raw := newRawPlanner(b)

	pr := 0
	// round returns the makespans to the buttons, to ready and raw, and
	// the CPU the whole machine spent on twokey's plans and on raw's.
	round := func() (buttonsSpan, readySpan, rawSpan time.Duration, cpu, rawCPU float64) {
		pr++
		tf := benchTF(fmt.Sprint("pr-", pr), benchResources)
		s.openPRWith(pr, tf)
		var wg sync.WaitGroup
		c0 := machineCPU(b)
		msgs := make([]slacksim.Message, envs)
		buttons, ready := make([]time.Duration, envs), make([]time.Duration, envs)
		for i := range envs {
			wg.Go(func() { buttons[i], ready[i], msgs[i] = s.benchPlan(fmt.Sprintf("bench%d", i), pr) })
		}
		wg.Wait()
		buttonsSpan, readySpan, cpu = slices.Max(buttons), slices.Max(ready), machineCPU(b)-c0
		for _, m := range msgs {
			s.click(alice, m, reject)
			s.waitTS(m.TS, "Rejected")
		}
		start, c0 := time.Now(), machineCPU(b)
		for range envs {
			wg.Go(func() { raw.plan(b, tf) })
		}
		wg.Wait()
		return buttonsSpan, readySpan, time.Since(start), cpu, machineCPU(b) - c0
	}
	round() // warm up: each environment's first run learns its binary

	var tw, tr, rw []time.Duration
	for b.Loop() {
		t, d, r, cpu, rawCPU := round()
		b.Logf("batch %d: makespan of %d plans at once: buttons %.0f ms, ready %.0f ms, against %.0f ms raw (%.2f×, %.2f×); CPU %.2f s against %.2f s",
			len(tw)+1, envs, ms(t), ms(d), ms(r), float64(t)/float64(r), float64(d)/float64(r), cpu, rawCPU)
		tw, tr, rw = append(tw, t), append(tr, d), append(rw, r)
	}
	report(b, fmt.Sprintf("makespan of %d plans on %d environments at once, to their buttons", envs, envs), "", tw, rw)
	report(b, fmt.Sprintf("makespan of %d plans on %d environments at once, to ready for review", envs, envs), "ready-", tr, rw)
}

// BenchmarkSlackApply: the second (deciding) approval's click → the apply
// recorded as started (audit apply_started), → its Vault credential
// minted, → terraform applying (the first resource's provisioner has run:
// checkout, init and apply's start included), and → the message saying
// Applied. Each batch is one plan approved by two people.
func BenchmarkSlackApply(b *testing.B) {
	s := newStack(b)
	s.startBot("--log-level", "info")
	stamps := s.out
	pr := 0
	var started, minted, applying, applied []time.Duration
	for b.Loop() {
		pr++
		// Each pull request keeps the resources applied before and adds one,
		// whose provisioner notes when apply reached it.
		var tf strings.Builder
		tf.WriteString("terraform {\n  backend \"local\" {}\n}\n")
		for i := 1; i <= pr; i++ {
			fmt.Fprintf(&tf, "\nresource \"terraform_data\" \"a%d\" {\n  input = %d\n  provisioner \"local-exec\" {\n    command = \"date +%%s%%N > %s/stamp-%d\"\n  }\n}\n",
				i, i, stamps, i)
		}
		s.openPRWith(pr, tf.String())
		_, _, msg := s.benchPlan("staging", pr)
		planID := msg.Buttons()[0].Value
		s.click(bob, msg, approve)
		s.waitTS(msg.TS, "1 more needed")
		clicked := time.Now()
		s.click(carol, msg, approve)
		s.waitTS(msg.TS, "Applied")
		done := time.Since(clicked)
		stamp, err := os.ReadFile(filepath.Join(stamps, fmt.Sprintf("stamp-%d", pr)))
		if err != nil {
			b.Fatalf("the provisioner did not run: %v", err)
		}
		nanos, err := strconv.ParseInt(strings.TrimSpace(string(stamp)), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		var start, mint time.Time
		for _, e := range s.events() {
			if e.PlanID != planID {
				continue
			}
			switch {
			case e.Type == audit.ApplyStarted:
				start = e.Time
			case e.Type == audit.CredentialMinted && strings.HasPrefix(e.Detail["purpose"], "apply "):
				mint = e.Time
			}
		}
		started, minted = append(started, start.Sub(clicked)), append(minted, mint.Sub(clicked))
		applying, applied = append(applying, time.Unix(0, nanos).Sub(clicked)), append(applied, done)
		b.Logf("apply %d: click → apply_started %v, → credential minted %v, → terraform applying %v, → Applied message %v", pr,
			started[len(started)-1].Round(100*time.Microsecond), minted[len(minted)-1].Round(100*time.Microsecond),
			applying[len(applying)-1].Round(time.Millisecond), done.Round(time.Millisecond))
	}
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{{"started", started}, {"minted", minted}, {"applying", applying}, {"applied", applied}} {
		lo, med, hi := spread(m.ds)
		b.ReportMetric(ms(med), m.name+"-ms")
		b.Logf("click → %s: median %.1f ms (%.1f–%.1f), %d applies", m.name, ms(med), ms(lo), ms(hi), len(m.ds))
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// machineCPU is the CPU time, in seconds, the whole machine has spent
// (user, nice and system, from /proc/stat): what two cores share.
func machineCPU(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var ticks float64
	for _, x := range f[1:4] {
		v, err := strconv.ParseFloat(x, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		ticks += v
	}
	return ticks / 100 // USER_HZ
}
