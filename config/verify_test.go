package config

import (
	"strings"
	"testing"
	"time"
)

func TestVerifyConfig(t *testing.T) {
	withVerify := func(v string) string {
		return strings.Replace(minimal, "        vault: {apply: {role: staging-apply}}\n",
			"        vault: {apply: {role: staging-apply}}\n        verify: "+v+"\n", 1)
	}
	c, err := Parse(strings.NewReader(withVerify(`{converged: true, smoke: ./scripts/smoke.sh, timeout: 90s}`)))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Projects[0].Environments[0].Verify
	if !v.Converged || v.Smoke != "./scripts/smoke.sh" || v.SmokeTimeout() != 90*time.Second {
		t.Fatalf("verify = %+v", v)
	}
	if c, err = Parse(strings.NewReader(withVerify(`{smoke: checks/smoke}`))); err != nil {
		t.Fatal(err)
	}
	if got := c.Projects[0].Environments[0].Verify.SmokeTimeout(); got != DefaultVerifyTimeout {
		t.Errorf("default timeout %v", got)
	}
	for v, want := range map[string]string{
		`{}`:                                 "verify: set converged, smoke or both",
		`{smoke: ../outside.sh}`:             `verify.smoke "../outside.sh"`,
		`{smoke: /bin/sh}`:                   `verify.smoke "/bin/sh"`,
		`{smoke: "scripts/../../x"}`:         `verify.smoke "scripts/../../x"`,
		`{smoke: "./smoke.sh --fast"}`:       `verify.smoke "./smoke.sh --fast"`,
		`{converged: true, timeout: 10ms}`:   "verify.timeout must be at least 1s",
		`{converged: true, timeout: banana}`: "banana",
	} {
		_, err := Parse(strings.NewReader(withVerify(v)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("verify %s: want %q in:\n%v", v, want, err)
		}
	}
}
