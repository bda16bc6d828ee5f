package runner_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/runner"
)

// Verification of an applied revision: converged plans it again, smoke
// runs the repository's program in the same sandboxed checkout with only
// what terraform gets (the plan credential among it, redacted from the
// output), and a program that outlives its timeout is killed.
func TestVerify(t *testing.T) {
	f := setup(t, 30*time.Second)
	f.target.PlanCreds = &runner.CredentialRequest{Role: "twokey-staging-plan", TTL: time.Minute}
	t.Setenv("SLACK_BOT_TOKEN", "xoxb-twokey-own-token-must-not-reach-smoke")
	const (
		empty   = "1111111111111111111111111111111111111112"
		pending = "1111111111111111111111111111111111111113"
	)
	smoke := `#!/bin/sh
echo "smoke in $TWOKEY_ENV at $(pwd)"
env | grep SLACK && echo FOUND-SLACK
echo "token=$VAULT_TOKEN"
test -d "$TWOKEY_TF_DIR/.terraform" && echo "init done"
exit ${SMOKE_EXIT:-1}
`
	slow := "#!/bin/sh\necho started\nsleep 617\necho NEVER\n"
	f.src.trees[empty] = map[string]string{"infra/main.tf": "terraform {\n  backend \"local\" {}\n}\n",
		"scripts/smoke.sh": smoke, "scripts/slow.sh": slow}
	f.src.trees[pending] = map[string]string{"infra/main.tf": mainTF(f.dir, "")}

	verify := func(sha string, steps runner.VerifySteps) runner.VerifyResult {
		t.Helper()
		res, err := f.r.Verify(context.Background(), runner.VerifyJob{ID: "p-verify", Rev: f.rev(sha), Target: f.target, Steps: steps})
		if err != nil {
			t.Fatalf("verify %s: %v", sha[len(sha)-1:], err)
		}
		return res
	}

	res := verify(empty, runner.VerifySteps{Converged: true})
	if !res.Passed() || len(res.Steps) != 1 || res.Steps[0].Summary != "no changes" {
		t.Errorf("converged config: %+v", res)
	}

	res = verify(pending, runner.VerifySteps{Converged: true})
	if res.Passed() || len(res.Steps) != 1 || res.Steps[0].Summary != "1 to add" ||
		strings.Join(res.Steps[0].Resources, ",") != "terraform_data.a" {
		t.Errorf("unconverged config: %+v", res)
	}

	res = verify(empty, runner.VerifySteps{Converged: true, Smoke: "./scripts/smoke.sh", Timeout: time.Minute})
	if res.Passed() || len(res.Steps) != 2 || !res.Steps[0].Passed || res.Steps[1].Passed || res.Steps[1].Summary != "exit status 1" {
		t.Fatalf("failing smoke: %+v", res)
	}
	out := res.Steps[1].Output
	for _, want := range []string{"smoke in staging", "token=" + runner.Redacted, "init done"} {
		if !strings.Contains(out, want) {
			t.Errorf("smoke output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FOUND-SLACK") || strings.Contains(out, "hvs.") {
		t.Errorf("smoke saw a secret:\n%s", out)
	}

	start := time.Now()
	res = verify(empty, runner.VerifySteps{Smoke: "scripts/slow.sh", Timeout: 2 * time.Second})
	if res.Passed() || !res.Steps[0].TimedOut || !strings.Contains(res.Steps[0].Summary, "timed out after 2s") ||
		!strings.Contains(res.Steps[0].Output, "started") || strings.Contains(res.Steps[0].Output, "NEVER") {
		t.Errorf("slow smoke: %+v", res)
	}
	if time.Since(start) > time.Minute {
		t.Errorf("slow smoke was not killed at its timeout")
	}
	// Nothing of it lives on.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && string(b) == "sleep\x00617\x00" {
			t.Errorf("the slow smoke's sleep is still running: %s", p)
		}
	}

	res = verify(empty, runner.VerifySteps{Smoke: "scripts/missing.sh"})
	if res.Passed() || !strings.Contains(res.Steps[0].Summary, "not a file") {
		t.Errorf("missing smoke: %+v", res)
	}
	for _, bad := range []string{"../etc/passwd", "/bin/sh", ".."} {
		if _, err := f.r.Verify(context.Background(), runner.VerifyJob{ID: "p-verify", Rev: f.rev(empty), Target: f.target,
			Steps: runner.VerifySteps{Smoke: bad}}); !errors.Is(err, runner.ErrVerifySteps) {
			t.Errorf("smoke %q: err = %v", bad, err)
		}
	}

	// Every plan credential minted was for a verification, and revoked.
	f.creds.mu.Lock()
	defer f.creds.mu.Unlock()
	if len(f.creds.minted) == 0 || len(f.creds.revoked) != len(f.creds.minted) {
		t.Errorf("minted %d, revoked %d", len(f.creds.minted), len(f.creds.revoked))
	}
	for _, m := range f.creds.minted {
		if m.Role != "twokey-staging-plan" || !strings.HasPrefix(m.Purpose, "verify ") {
			t.Errorf("minted %+v", m)
		}
	}
}
