package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/redis/go-redis/v9"

	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/bot/slacksim"
	"github.com/twokey/twokey/devstack/stacktest"
)

// Slack's view of break-glass, as the tests read it.
const (
	bgApprove      = "twokey_bg_approve"
	bgReview       = "twokey_bg_review"
	bgUnwrapFailed = "twokey_bg_unwrap_failed"
	bgRequestView  = "twokey_bg_request"
	bgReviewView   = "twokey_bg_review"
)

var wrapRE = regexp.MustCompile(`vault unwrap ([A-Za-z0-9._-]+)`)

// announcement waits for the security channel's message about grant id (or
// the newest grant, if id is "") that contains want.
func (s *stack) announcement(id, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range slices.Backward(msgs) {
			if m.Channel == security && m.ThreadTS == "" && strings.Contains(m.Content(), "Break-glass") &&
				strings.Contains(m.Content(), id) && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no announcement of %q containing %q\nmessages:\n%s\nlogs:\n%s", id, want, s.dump(), s.logs.String())
	}
	return found
}

// dmTo waits for a direct message to user containing want.
func (s *stack) dmTo(user, want string) slacksim.Message {
	s.t.Helper()
	var found slacksim.Message
	_, err := s.slack.Wait(waitFor, func(msgs []slacksim.Message) bool {
		for _, m := range msgs {
			if m.Channel == "D"+strings.TrimPrefix(user, "U") && strings.Contains(m.Content(), want) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		s.t.Fatalf("no DM to %s containing %q\nmessages:\n%s\nlogs:\n%s", user, want, s.dump(), s.logs.String())
	}
	return found
}

// grantID is the grant an announcement is about.
func grantID(t *testing.T, m slacksim.Message) string {
	t.Helper()
	id := regexp.MustCompile(`bg-[a-z2-9]{8}`).FindString(m.Content())
	if id == "" {
		t.Fatalf("no grant ID in %s", m.Content())
	}
	return id
}

// unwrap unwraps a wrapping token as the requester would, with no token of
// their own, and returns the token.
func (s *stack) unwrap(wrapToken string) (string, error) {
	c, err := s.vault.Client()
	if err != nil {
		return "", err
	}
	c.ClearToken()
	sec, err := c.Logical().UnwrapWithContext(context.Background(), wrapToken)
	if err != nil {
		return "", err
	}
	if sec == nil || sec.Auth == nil {
		return "", fmt.Errorf("unwrapped no token")
	}
	return sec.Auth.ClientToken, nil
}

// lookup looks a token up with Vault's root token.
func (s *stack) lookup(token string) (*vault.Secret, error) {
	c, err := s.vault.Client()
	if err != nil {
		return nil, err
	}
	return c.Auth().Token().LookupWithContext(context.Background(), token)
}

// submit submits the open view with callbackID on user's screen.
func (s *stack) submit(user, callbackID string, values map[string]string) map[string]string {
	s.t.Helper()
	v, err := s.slack.WaitView(user, callbackID, waitFor)
	if err != nil {
		s.t.Fatalf("%v\nlogs:\n%s", err, s.logs.String())
	}
	errs, err := s.slack.SubmitView(user, v.ID, values)
	if err != nil {
		s.t.Fatal(err)
	}
	return errs
}

// breakGlassEvents are the stages of grant id in the audit record.
func (s *stack) breakGlassEvents(id string) []string {
	s.t.Helper()
	var stages []string
	for _, e := range s.events() {
		if e.PlanID != id {
			continue
		}
		if e.Type == audit.BreakGlass {
			stages = append(stages, e.Detail["stage"]+":"+e.Actor.Name)
		} else {
			stages = append(stages, e.Type)
		}
	}
	return stages
}

// Requests that must not be granted are refused, with the reason, in both
// the command and the form.
func TestBreakGlassRefusals(t *testing.T) {
	s := newStack(t)
	s.startBot()
	s.slash(dave, `breakglass staging 30m "db failover stuck"`)
	s.ephemeral(dave, "on-call engineers may ask")
	s.slash(erin, `breakglass staging 2h "db failover stuck"`)
	s.ephemeral(erin, "2h is longer than break-glass in staging allows: at most 1h")
	s.slash(erin, `breakglass staging 30m`)
	s.ephemeral(erin, "breakglass needs a reason")

	// The form: the same checks, shown in the form, which stays open.
	s.slash(erin, "breakglass")
	if errs := s.submit(erin, bgRequestView, map[string]string{"bg_env": "infra/staging", "bg_duration": "30m", "bg_reason": "   "}); errs["bg_reason"] == "" {
		t.Fatalf("a blank reason was accepted: %v", errs)
	}
	if errs := s.submit(erin, bgRequestView, map[string]string{"bg_env": "infra/staging", "bg_duration": "3h", "bg_reason": "fire"}); !strings.Contains(errs["bg_duration"], "at most 1h") {
		t.Fatalf("an over-cap duration: %v", errs)
	}
	if errs := s.submit(erin, bgRequestView, map[string]string{"bg_env": "infra/staging", "bg_duration": "soon", "bg_reason": "fire"}); errs["bg_duration"] == "" {
		t.Fatalf("a malformed duration: %v", errs)
	}
	s.slack.CloseView(erin, s.slack.Views(erin)[0].ID)
	s.slash(dave, "breakglass")
	if errs := s.submit(dave, bgRequestView, map[string]string{"bg_env": "infra/staging", "bg_duration": "30m", "bg_reason": "fire"}); !strings.Contains(errs["bg_env"], "on-call") {
		t.Fatalf("dave is not on call: %v", errs)
	}
	for _, m := range s.slack.Messages() {
		if m.Channel == security {
			t.Fatalf("a refused request was announced: %s", m.Content())
		}
	}
}

// The whole life of an approved grant: announced, approved by someone else,
// delivered wrapped by DM, listed in /tf status, revoked, checked for
// drift, reviewed by two people. The token itself never reaches Slack or
// the logs.
func TestBreakGlassApprovedDeliveredRevokedReviewed(t *testing.T) {
	s := newStack(t)
	s.startBot("--sweep-interval", "200ms")
	s.slash(erin, `breakglass staging 10m "db failover stuck, need to resize https://incidents.example.com/INC-42"`)
	s.ephemeral(erin, "waiting for one approval")
	ann := s.announcement("", "waiting for approval")
	id := grantID(t, ann)
	if !strings.Contains(ann.Content(), "https://incidents.example.com/INC-42") {
		t.Errorf("the announcement lacks the incident link: %s", ann.Content())
	}
	s.click(erin, ann, bgApprove)
	s.ephemeral(erin, "cannot approve")
	s.click(dave, ann, bgApprove)
	s.ephemeral(dave, "your click was not counted")
	approved := time.Now()
	s.click(bob, ann, bgApprove)

	dm := s.dmTo(erin, "vault unwrap")
	t.Logf("approval → wrapped token in erin's DMs: %v", time.Since(approved).Round(time.Millisecond))
	m := wrapRE.FindStringSubmatch(dm.Content())
	if m == nil {
		t.Fatalf("no wrapping token in the DM: %s", dm.Content())
	}
	wrapToken := m[1]
	token, err := s.unwrap(wrapToken)
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	look, err := s.lookup(token)
	if err != nil {
		t.Fatal(err)
	}
	policies := mustPolicies(t, look)
	ttl, err := look.TokenTTL()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(policies, []string{"staging-breakglass"}) || ttl <= 0 || ttl > 10*time.Minute {
		t.Fatalf("the unwrapped token: policies %v, ttl %v", policies, ttl)
	}
	s.announcement(id, "token delivered")
	s.thread(ann, "The token was unwrapped at") // the security channel sees it picked up
	s.dmTo(erin, "was unwrapped at")

	s.slash(bob, "status staging")
	s.ephemeral(bob, id+"` infra/staging by <@"+erin+">: active")

	// The token reaches no Slack call and no log line; the wrapping token
	// goes in exactly one call, the DM to erin.
	carrying := 0
	for _, c := range s.slack.Calls() {
		raw := fmt.Sprint(c.Params)
		if strings.Contains(raw, token) {
			t.Errorf("the token reached Slack in %s", c.Method)
		}
		if strings.Contains(raw, wrapToken) {
			carrying++
			if c.Method != "chat.postMessage" || c.Params["channel"] != "DERIN" {
				t.Errorf("the wrapping token reached Slack in %s to %s", c.Method, c.Params["channel"])
			}
		}
	}
	if carrying != 1 {
		t.Errorf("the wrapping token went to Slack %d times, want once", carrying)
	}

	// A manual change made with the token: drift the check must find.
	s.manualApply(token)

	s.slash(erin, "breakglass revoke "+id)
	s.ephemeral(erin, "Vault confirms the token is gone")
	if _, err := s.lookup(token); err == nil {
		t.Fatal("the token still exists after revoke")
	}
	s.announcement(id, "revoked")
	drift := s.thread(ann, "Drift")
	if !strings.Contains(drift.Content(), "destroy 1") || !strings.Contains(drift.Content(), "terraform_data.hotfix") {
		t.Fatalf("drift report: %s", drift.Content())
	}

	// Reviews: never the requester; two others close the grant.
	ann = s.announcement(id, "Reviewed")
	s.click(erin, ann, bgReview)
	s.ephemeral(erin, "cannot review their own")
	s.click(bob, ann, bgReview)
	if errs := s.submit(bob, bgReviewView, map[string]string{"bg_note": "resize done by hand; PR #7 brings it into code"}); errs != nil {
		t.Fatalf("review: %v", errs)
	}
	s.thread(ann, "Reviewed by <@UBOB>: resize done by hand")
	s.click(carol, ann, bgReview)
	if errs := s.submit(carol, bgReviewView, map[string]string{}); errs != nil {
		t.Fatalf("review: %v", errs)
	}
	s.thread(ann, "Review complete (2 of 2)")
	s.announcement(id, "revoked, reviewed")

	s.slash(dave, "show "+id) // anyone can read the story
	story := s.ephemeral(dave, "Break-glass `"+id+"`")
	for _, step := range []string{"break-glass requested", "break-glass approved · <@UBOB>", "break-glass revoked · <@UERIN>",
		"break-glass reviewed · <@UCAROL>"} {
		if !strings.Contains(story.Content(), step) {
			t.Errorf("/tf show lacks %q:\n%s", step, story.Content())
		}
	}

	if logs := s.logs.String(); strings.Contains(logs, token) || strings.Contains(logs, wrapToken) {
		t.Fatal("a token reached the log")
	}
	want := []string{"requested:erin", "approved:bob", "credential_requested", "credential_minted", "minted:twokey", "delivered:twokey",
		"unwrapped:twokey", "credential_revoked", "revoked:erin", "credential_requested", "credential_minted", "credential_revoked", // the drift check's read-only credential
		"drift:twokey", "reviewed:bob", "reviewed:carol"}
	if got := s.breakGlassEvents(id); !slices.Equal(got, want) {
		t.Fatalf("break-glass events:\n%v\nwant\n%v", got, want)
	}
}

// manualApply changes the staging state by hand, as an on-call engineer
// with a break-glass token might: a resource the code does not have.
func (s *stack) manualApply(token string) {
	s.t.Helper()
	dir := s.t.TempDir()
	tf := `terraform {
  backend "local" {}
}
resource "terraform_data" "hotfix" {
  input = "by hand"
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(tf), 0o600); err != nil {
		s.t.Fatal(err)
	}
	bin := stacktest.Tool(s.t, "terraform")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TF_CLI_CONFIG_FILE=" + os.DevNull,
		"CHECKPOINT_DISABLE=1", "VAULT_TOKEN=" + token, "VAULT_ADDR=" + s.vault.Addr}
	for _, args := range [][]string{{"init", "-input=false", "-backend-config=path=" + s.statePath()},
		{"apply", "-input=false", "-auto-approve"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			s.t.Fatalf("terraform %s: %v\n%s", args[0], err, out)
		}
	}
}

// Self-service where configured: no approval, still announced; at expiry
// the bot confirms the token is gone, checks for drift and asks for review.
func TestBreakGlassSelfServiceExpires(t *testing.T) {
	s := newStack(t)
	s.startBot("--sweep-interval", "200ms")
	s.slash(erin, `breakglass prod 1m "queue stuck"`)
	s.ephemeral(erin, "self-service here")
	dm := s.dmTo(erin, "vault unwrap")
	token, err := s.unwrap(wrapRE.FindStringSubmatch(dm.Content())[1])
	if err != nil {
		t.Fatal(err)
	}
	ann := s.announcement("", "self-service")
	id := grantID(t, ann)
	if policies := mustPolicies(t, mustLookup(t, s, token)); !slices.Equal(policies, []string{"prod-breakglass"}) {
		t.Fatalf("policies %v", policies)
	}

	// Expiry: Vault ends the token; the bot notices, confirms, reports.
	s.threadWithin(2*time.Minute, ann, "The token expired. Vault confirms the token is gone")
	if _, err := s.lookup(token); err == nil {
		t.Fatal("the token outlived its TTL")
	}
	s.thread(ann, "No drift")
	s.thread(ann, "Review needed")
	s.announcement(id, "expired, *unreviewed*")
	s.slash(bob, "status")
	s.ephemeral(bob, id+"` infra/prod by <@"+erin+">: expired, *unreviewed* (0 of 2 reviews)")
	want := []string{"requested:erin", "credential_requested", "credential_minted", "minted:twokey", "delivered:twokey", "unwrapped:twokey",
		"expired:twokey", "drift:twokey"}
	got := s.breakGlassEvents(id)
	// Vault ends a token past its TTL a moment later: a bot that asks at
	// once finds it still there, revokes it, and records that.
	revokedFirst := slices.Insert(slices.Clone(want), slices.Index(want, "expired:twokey"), "credential_revoked")
	if !slices.Equal(got, want) && !slices.Equal(got, revokedFirst) {
		t.Fatalf("break-glass events:\n%v\nwant\n%v", got, want)
	}
	var expires, noticed time.Time
	for _, e := range s.events() {
		switch {
		case e.PlanID == id && e.Detail["stage"] == "minted":
			if expires, err = time.Parse(time.RFC3339, e.Detail["expires"]); err != nil {
				t.Fatalf("the minted event's expiry: %v", err)
			}
		case e.PlanID == id && e.Detail["stage"] == "expired":
			noticed = e.Time
		}
	}
	if expires.IsZero() || noticed.IsZero() {
		t.Fatalf("no minted or no expired event (expires %v, noticed %v)", expires, noticed)
	}
	t.Logf("token TTL end → expiry confirmed with Vault and recorded: %v (sweep every 200ms)", noticed.Sub(expires).Round(time.Millisecond))
}

// events is the whole audit record.
func (s *stack) events() []audit.Event {
	s.t.Helper()
	code, out := s.auditMain("export", "--format", "jsonl")
	if code != 0 {
		s.t.Fatalf("export: %s", out)
	}
	var events []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			s.t.Fatal(err)
		}
		events = append(events, e)
	}
	return events
}

// mustPolicies returns a token lookup's policies.
func mustPolicies(t *testing.T, look *vault.Secret) []string {
	t.Helper()
	policies, err := look.TokenPolicies()
	if err != nil {
		t.Fatal(err)
	}
	return policies
}

func mustLookup(t *testing.T, s *stack, token string) *vault.Secret {
	t.Helper()
	sec, err := s.lookup(token)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// A wrapping token someone else unwrapped first: when the requester's own
// unwrap fails and they say so, Vault confirms it was used, and the token
// is revoked and reported as compromised.
func TestBreakGlassCompromised(t *testing.T) {
	s := newStack(t)
	s.startBot()
	s.slash(erin, `breakglass staging 15m "disk full"`)
	ann := s.announcement("", "waiting for approval")
	id := grantID(t, ann)
	s.click(alice, ann, bgApprove) // another on-call engineer
	dm := s.dmTo(erin, "vault unwrap")
	stolen, err := s.unwrap(wrapRE.FindStringSubmatch(dm.Content())[1]) // someone reading erin's DMs
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.unwrap(wrapRE.FindStringSubmatch(dm.Content())[1]); err == nil {
		t.Fatal("a wrapping token unwrapped twice")
	}
	s.click(erin, dm, bgUnwrapFailed)
	s.dmTo(erin, "was compromised")
	s.thread(ann, "Compromised")
	s.announcement(id, "compromised")
	if _, err := s.lookup(stolen); err == nil {
		t.Fatal("the stolen token still works")
	}
	got := s.breakGlassEvents(id)
	if !slices.Contains(got, "compromised:erin") {
		t.Fatalf("no compromised event: %v", got)
	}
}

// With runner pools, serve holds no Vault login: the prod pool's worker
// creates, checks and revokes the token and runs the drift check; serve
// delivers the wrapping token after checking it with Vault, and Redis
// keeps no copy of it.
func TestBreakGlassOnRunnerPools(t *testing.T) {
	w := newPoolWorld(t)
	w.startServe()
	w.startRunner("prod", "prod-1")
	w.slash(erin, `breakglass prod 10m "queue stuck"`)
	dm := w.dmTo(erin, "vault unwrap")
	wrapToken := wrapRE.FindStringSubmatch(dm.Content())[1]
	ann := w.announcement("", "token delivered")
	id := grantID(t, ann)
	if key := redisHolding(t, w.rdb, wrapToken); key != "" {
		t.Errorf("the wrapping token is in Redis under %s", key)
	}
	token, err := w.unwrap(wrapToken)
	if err != nil {
		t.Fatal(err)
	}
	if policies := mustPolicies(t, mustLookup(t, w.stack, token)); !slices.Equal(policies, []string{"prod-breakglass"}) {
		t.Fatalf("policies %v", policies)
	}
	w.slash(erin, "breakglass revoke "+id)
	w.ephemeral(erin, "Vault confirms the token is gone")
	if _, err := w.lookup(token); err == nil {
		t.Fatal("the token outlived its revocation")
	}
	w.thread(ann, "No drift")
	if !strings.Contains(w.logs.String(), `kind=drift`) || !strings.Contains(w.logs.String(), `kind=breakglass`) {
		t.Fatalf("the break-glass work did not run on the pool:\n%s", w.logs.String())
	}
}

// redisHolding returns a key whose value contains needle, or "".
func redisHolding(t *testing.T, rdb *redis.Client, needle string) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("read Redis keys: %v (%d keys)", err, len(keys))
	}
	for _, key := range keys {
		var values []string
		switch rdb.Type(ctx, key).Val() {
		case "string":
			values = []string{rdb.Get(ctx, key).Val()}
		case "hash":
			for k, v := range rdb.HGetAll(ctx, key).Val() {
				values = append(values, k, v)
			}
		case "list":
			values = rdb.LRange(ctx, key, 0, -1).Val()
		case "set":
			values = rdb.SMembers(ctx, key).Val()
		case "zset":
			values = rdb.ZRange(ctx, key, 0, -1).Val()
		case "stream":
			for _, m := range rdb.XRange(ctx, key, "-", "+").Val() {
				values = append(values, fmt.Sprint(m.Values))
			}
		}
		for _, v := range values {
			if strings.Contains(v, needle) {
				return key
			}
		}
	}
	return ""
}
