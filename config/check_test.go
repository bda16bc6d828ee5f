package config

import (
	"strings"
	"testing"
)

// Check reads a config as far as it can: keys it does not know do not keep
// the rest from being validated, and every problem comes back at once.
func TestCheckReportsEverything(t *testing.T) {
	bad := strings.Replace(minimal, "terraform: {version: 1.12.2}", "terraform: {versoin: 1.12.2}\nslack: {bot_token: xoxb-1}", 1)
	bad = strings.Replace(bad, "approvers: {users: [UAPPROVE1]}", "approvers: {users: [UAPPROVE1]}\n        required_approvals: 1", 1)
	c, err := Check(strings.NewReader(bad))
	if c == nil || err == nil {
		t.Fatalf("Check = %v, %v", c, err)
	}
	for _, want := range []string{"field versoin not found", "field bot_token not found", // both unknown keys
		"terraform.version is required", "required_approvals is 1"} { // and what Validate finds
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if c.Slack.BotTokenEnv != "SLACK_BOT_TOKEN" || c.Projects[0].Name != "infra" {
		t.Errorf("the config was not read past its problems: %+v", c)
	}
	// Parse, which processes start with, refuses what Check reports.
	if _, perr := Parse(strings.NewReader(bad)); perr == nil {
		t.Fatal("Parse accepted a config Check refused")
	}
}

// Check and Parse agree: whatever Parse refuses Check reports too, and a
// config Parse accepts has no problem for Check.
func TestCheckAgreesWithParse(t *testing.T) {
	for _, in := range []string{
		minimal, pooled, pipeline,
		"",
		"projects: [\n",
		minimal + "bogus: 1\n",
		strings.Replace(minimal, "name: staging", "name: staging\n        plan_ttl: soon", 1),
		strings.Replace(pipeline, "pool: prod", "pool: gpu", 1),
	} {
		_, perr := Parse(strings.NewReader(in))
		c, cerr := Check(strings.NewReader(in))
		switch {
		case perr == nil && (cerr != nil || c == nil):
			t.Errorf("Parse accepts, Check says %v:\n%s", cerr, in)
		case perr != nil && cerr == nil:
			t.Errorf("Parse refuses (%v), Check accepts:\n%s", perr, in)
		case perr != nil:
			for _, line := range strings.Split(perr.Error(), "\n") {
				if strings.HasSuffix(line, "yaml: unmarshal errors:") {
					continue // Check gives each of these errors a line of its own
				}
				if !strings.Contains(cerr.Error(), strings.TrimSpace(line)) {
					t.Errorf("Parse reports %q, Check does not:\n%v", line, cerr)
				}
			}
		}
	}
}

func TestForRunner(t *testing.T) {
	c, err := Parse(strings.NewReader(pooled))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.ForRunner("prod"), (Needs{Vault: true, Pool: "prod"}); got != want {
		t.Errorf("ForRunner = %+v, want %+v", got, want)
	}
}

// A malformed duration is one problem among the others, not the end of
// reading: what follows it is still checked.
func TestCheckGoesOnPastABadDuration(t *testing.T) {
	bad := strings.Replace(minimal, "name: staging", "name: staging\n        plan_ttl: soon", 1)
	bad = strings.Replace(bad, "terraform: {version: 1.12.2}", "terraform: {versoin: 1.12.2}", 1)
	_, err := Check(strings.NewReader(bad))
	for _, want := range []string{`"soon" is not a duration`, "field versoin not found", "terraform.version is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
