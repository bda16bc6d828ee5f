package bot

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/slack-go/slack"
)

// clickPayload is a block_actions payload as Slack sends it over Socket Mode.
const clickPayload = `{"type":"block_actions","user":{"id":"UBOB","username":"bob","team_id":"T0TWOKEY"},
"api_app_id":"A0TWOKEY","token":"x","container":{"type":"message","message_ts":"1.000001","channel_id":"CDEPLOY","is_ephemeral":false},
"trigger_id":"t","team":{"id":"T0TWOKEY","domain":"twokey"},"enterprise":null,"channel":{"id":"CDEPLOY","name":"deploys"},
"message":{"type":"message","ts":"1.000001","text":"plan"},"response_url":"https://hooks.slack.invalid/x",
"actions":[{"action_id":"twokey_approve","block_id":"twokey_actions","value":"p-abcdefgh","type":"button","action_ts":"1.2"}]}`

func TestClickOf(t *testing.T) {
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(clickPayload), &cb); err != nil {
		t.Fatal(err)
	}
	c, err := clickOf(cb)
	if err != nil || c.user != "UBOB" || c.id != "p-abcdefgh" || c.action != actionApprove || c.channel != "CDEPLOY" || c.team != "T0TWOKEY" {
		t.Fatalf("clickOf = %+v, %v", c, err)
	}
	// Enterprise Grid: an organization-level user's team is the
	// organization the payload names.
	cb.Enterprise.ID, cb.User.TeamID = "E0ACME", "E0ACME"
	if c, err := clickOf(cb); err != nil || c.enterprise != "E0ACME" || c.team != "T0TWOKEY" {
		t.Fatalf("Grid click: clickOf = %+v, %v", c, err)
	}
	// An Approve on a preview carries the tag of what it showed.
	cb.ActionCallback.BlockActions[0].Value = "p-abcdefgh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if c, err := clickOf(cb); err != nil || c.id != "p-abcdefgh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
		t.Fatalf("preview click: clickOf = %+v, %v", c, err)
	}
	for name, mutate := range map[string]func(*slack.InteractionCallback){
		"tag on reject": func(cb *slack.InteractionCallback) {
			cb.ActionCallback.BlockActions[0].ActionID, cb.ActionCallback.BlockActions[0].Value = actionReject, "p-abcdefgh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		},
		"short tag": func(cb *slack.InteractionCallback) {
			cb.ActionCallback.BlockActions[0].Value = "p-abcdefgh:0123456789abcdef"
		},
		"tag, no plan": func(cb *slack.InteractionCallback) {
			cb.ActionCallback.BlockActions[0].Value = ":0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		},
		"two tags": func(cb *slack.InteractionCallback) {
			cb.ActionCallback.BlockActions[0].Value = "p-abcdefgh:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		},
		"view submission": func(cb *slack.InteractionCallback) { cb.Type = slack.InteractionTypeViewSubmission },
		"no action":       func(cb *slack.InteractionCallback) { cb.ActionCallback.BlockActions = nil },
		"two actions": func(cb *slack.InteractionCallback) {
			cb.ActionCallback.BlockActions = append(cb.ActionCallback.BlockActions, cb.ActionCallback.BlockActions[0])
		},
		"unknown button": func(cb *slack.InteractionCallback) { cb.ActionCallback.BlockActions[0].ActionID = "twokey_apply_now" },
		"bad plan id":    func(cb *slack.InteractionCallback) { cb.ActionCallback.BlockActions[0].Value = "../../etc" },
		"user elsewhere": func(cb *slack.InteractionCallback) { cb.User.TeamID = "T0OTHER" },
		"user of another org": func(cb *slack.InteractionCallback) {
			cb.Enterprise.ID, cb.User.TeamID = "E0ACME", "E0OTHER"
		},
		"org user, no org": func(cb *slack.InteractionCallback) { cb.User.TeamID = "E0ACME" },
		"no user":          func(cb *slack.InteractionCallback) { cb.User.ID = "" },
		"lowercase user":   func(cb *slack.InteractionCallback) { cb.User.ID = "ubob" },
		"no team":          func(cb *slack.InteractionCallback) { cb.Team.ID = ""; cb.User.TeamID = "" },
		"no channel":       func(cb *slack.InteractionCallback) { cb.Channel.ID = ""; cb.Container.ChannelID = "" },
		"nil action":       func(cb *slack.InteractionCallback) { cb.ActionCallback.BlockActions[0] = nil },
	} {
		var cb slack.InteractionCallback
		_ = json.Unmarshal([]byte(clickPayload), &cb)
		mutate(&cb)
		if _, err := clickOf(cb); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzInteraction feeds arbitrary interaction payloads through slack-go's
// decoder and clickOf: nothing may panic, and anything accepted must be a
// single press of a known button on a well-formed plan, by a well-formed
// user, in a well-formed channel and team.
func FuzzInteraction(f *testing.F) {
	f.Add([]byte(clickPayload))
	f.Add([]byte(`{"type":"block_actions","actions":[]}`))
	f.Add([]byte(`{"type":"block_actions","user":{"id":"U1","team_id":"T1"},"team":{"id":"T1"},"channel":{"id":"C1"},"actions":[{"action_id":"twokey_reject","value":"p-23456789"}]}`))
	f.Add([]byte(`{"type":"view_submission","view":{"id":"V1"}}`))
	f.Add([]byte(`{"type":"block_actions","actions":[null]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var cb slack.InteractionCallback
		if json.Unmarshal(payload, &cb) != nil {
			return
		}
		c, err := clickOf(cb)
		if err != nil {
			if !errors.Is(err, errUnknownAction) && !errors.Is(err, errOtherWorkspace) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if re, ok := buttons[c.action]; !ok || !re.MatchString(c.id) ||
			!slackID.MatchString(c.user) || !slackID.MatchString(c.channel) || !slackID.MatchString(c.team) {
			t.Fatalf("accepted a malformed click %+v from %q", c, payload)
		}
	})
}
