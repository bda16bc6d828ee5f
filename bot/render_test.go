package bot

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/bot/slacksim"
)

func testPlan(t *testing.T, resources int) approvals.Plan {
	t.Helper()
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	p, err := approvals.New(approvals.Request{
		ID: "p-test", Project: "infra", Env: "staging", PR: 42, SHA: strings.Repeat("a", 40),
		Title: "Bump <everything> & more", Requester: "UALICE", Channel: "C1", Fence: 3, LockOwner: "o",
		Required: 2, Protected: true, TTL: time.Hour,
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	var s approvals.Summary
	for i := range resources {
		a := approvals.ActionCreate
		if i%10 == 0 {
			a = approvals.ActionDelete
		}
		s.Resources = append(s.Resources, approvals.Resource{Address: fmt.Sprintf("module.m.terraform_data.r[%d]", i), Action: a})
	}
	s.Add = resources
	p, err = approvals.Planned(p, strings.Repeat("d", 64), s, approvals.Assessment{}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func render(t *testing.T, p approvals.Plan) (string, string) {
	t.Helper()
	b := &Bot{o: Options{Scope: func(_, env string) string { return env }}}
	text, blocks := b.planMessage(p)
	var js strings.Builder
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(blocks); err != nil {
		t.Fatal(err)
	}
	if e := slacksim.Validate(text, js.String()); e != "" {
		t.Fatalf("Slack would refuse the message: %s", e)
	}
	return text, js.String()
}

func TestLargePlanFitsSlackLimits(t *testing.T) {
	_, js := render(t, testPlan(t, 2000))
	if !strings.Contains(js, "more") || !strings.Contains(js, "DESTROY") {
		t.Fatalf("large plan not summarised: %.300s", js)
	}
}

func TestPlanMessageStates(t *testing.T) {
	p := testPlan(t, 3)
	_, js := render(t, p)
	for _, want := range []string{actionApprove, actionReject, "Needs 2 approvals", "&lt;everything&gt; &amp; more", "expires"} {
		if !strings.Contains(js, want) {
			t.Errorf("pending message lacks %q", want)
		}
	}
	p, _, _ = approvals.Approve(p, "UBOB", true, p.PlannedAt)
	_, js = render(t, p)
	if !strings.Contains(js, "Approved by <@UBOB> — 1 more needed") {
		t.Errorf("approval not shown: %s", js)
	}
	p, _ = approvals.Reject(p, "UCAROL", true, "", p.PlannedAt)
	_, js = render(t, p)
	if strings.Contains(js, actionApprove) || !strings.Contains(js, "Rejected by") {
		t.Errorf("rejected message: %s", js)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{30 * time.Minute: "30m", time.Hour: "1h", 90 * time.Minute: "1h30m",
		45 * time.Second: "45s", 0: "0s", 2*time.Hour + 5*time.Second: "2h5s", 10 * time.Minute: "10m"} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

// Approve asks to confirm on a plan that destroys or replaces something,
// naming it, and in a protected environment; a denied plan shows its
// findings and an Override button with its own confirm dialog.
func TestApproveConfirmAndPolicyLine(t *testing.T) {
	confirmOf := func(t *testing.T, js, action string) map[string]any {
		t.Helper()
		var blocks []map[string]any
		if err := json.Unmarshal([]byte(js), &blocks); err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			els, _ := b["elements"].([]any)
			for _, e := range els {
				if e, _ := e.(map[string]any); e["action_id"] == action {
					c, _ := e["confirm"].(map[string]any)
					return c
				}
			}
		}
		t.Fatalf("no %s button in %s", action, js)
		return nil
	}

	p := testPlan(t, 3)
	p.Protected = false
	if _, js := render(t, p); confirmOf(t, js, actionApprove) != nil {
		t.Error("an unprotected plan that destroys nothing asks to confirm")
	}
	p.Protected = true
	if _, js := render(t, p); !strings.Contains(fmt.Sprint(confirmOf(t, js, actionApprove)), "protected environment") {
		t.Errorf("protected: confirm = %v", confirmOf(t, js, actionApprove))
	}
	p.Policy = approvals.Assessment{Risks: []approvals.Risk{{Kind: approvals.RiskDestroy, Address: "aws_db_instance.main"},
		{Kind: approvals.RiskReplace, Address: "aws_instance.app"}}}
	_, js := render(t, p)
	if c := fmt.Sprint(confirmOf(t, js, actionApprove)); !strings.Contains(c, "aws_db_instance.main") || !strings.Contains(c, "aws_instance.app") {
		t.Errorf("destroy: confirm = %s", c)
	}
	if !strings.Contains(js, "destroy 1 (`aws_db_instance.main`)") {
		t.Errorf("risks not shown: %s", js)
	}

	p.OverridesRequired = 1
	p.Policy.Checked = true
	p.Policy.Denied = []approvals.Finding{{Rule: "twokey.network.deny", Message: "sg opens 22 to 0.0.0.0/0"}}
	_, js = render(t, p)
	for _, want := range []string{"Policy denied", "sg opens 22 to 0.0.0.0/0", "an override by a policy owner"} {
		if !strings.Contains(js, want) {
			t.Errorf("denied plan lacks %q: %s", want, js)
		}
	}
	if confirmOf(t, js, actionOverride) == nil {
		t.Error("Override has no confirm dialog")
	}
	p.OverridesRequired = 0
	if _, js = render(t, p); strings.Contains(js, actionOverride) {
		t.Error("an Override button where nobody may override")
	}
}

// A plan still planning shows no buttons; once terraform has said what it
// does, the preview shows its counts and the buttons, without a policy
// verdict, until the saved plan is in.
func TestPlanMessagePreview(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	p, err := approvals.New(approvals.Request{ID: "p-test", Project: "infra", Env: "staging", PR: 42, SHA: strings.Repeat("a", 40),
		Requester: "UALICE", Channel: "C1", Fence: 3, LockOwner: "o", Required: 2, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	_, js := render(t, p)
	if strings.Contains(js, actionApprove) || strings.Contains(js, actionReject) || strings.Contains(js, "To add") {
		t.Errorf("planning message: %s", js)
	}
	p.Preview = &approvals.Summary{Add: 2, Destroy: 1, Resources: []approvals.Resource{
		{Address: "terraform_data.a", Action: approvals.ActionCreate}, {Address: "terraform_data.gone", Action: approvals.ActionDelete}}}
	_, js = render(t, p)
	for _, want := range []string{actionApprove, actionReject, "Planned, checking", "*To add*\\n2", "*To destroy*\\n1",
		"terraform_data.gone", "reading the saved plan back", "*destroys or replaces*"} {
		if !strings.Contains(js, want) {
			t.Errorf("preview lacks %q: %s", want, js)
		}
	}
	if strings.Contains(js, "Policy") || strings.Contains(js, "expires") {
		t.Errorf("preview shows what only the saved plan says: %s", js)
	}
	if !strings.Contains(js, `"value":"p-test:`+p.Preview.Tag()+`"`) {
		t.Errorf("the preview's Approve does not carry the tag of what it shows: %s", js)
	}
}
