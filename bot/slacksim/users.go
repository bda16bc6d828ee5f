package slacksim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SlashCommand delivers `/tf <text>` typed by user in channel.
func (s *Server) SlashCommand(user, channel, text string) (string, error) {
	s.mu.Lock()
	u, found := s.users[user]
	chName := s.channels[channel]
	s.mu.Unlock()
	if !found {
		return "", fmt.Errorf("slacksim: no user %s", user)
	}
	team, enterprise := s.where(u)
	return s.Deliver("slash_commands", map[string]any{
		"token": "verification-token-unused", "team_id": team, "enterprise_id": enterprise, "team_domain": "twokey",
		"channel_id": channel, "channel_name": chName, "user_id": u.ID, "user_name": u.Name,
		"command": "/tf", "text": text, "api_app_id": "A0TWOKEY", "is_enterprise_install": false,
		"response_url": s.newResponseURL(u.ID, channel, ""),
		"trigger_id":   s.newTrigger(u.ID),
	})
}

// ErrNoButton means the message has no such button (any more).
var ErrNoButton = errors.New("slacksim: no such button")

// Click presses the button with actionID on the message at ts, as user.
func (s *Server) Click(user, channel, ts, actionID string) (string, error) {
	s.mu.Lock()
	u, found := s.users[user]
	m := s.find(channel, ts)
	var msg Message
	if m != nil {
		msg = *m
	}
	s.mu.Unlock()
	if !found {
		return "", fmt.Errorf("slacksim: no user %s", user)
	}
	if m == nil || (msg.Ephemeral && msg.For != user) {
		return "", fmt.Errorf("slacksim: no message %s in %s", ts, channel)
	}
	var button *Button
	for _, b := range msg.Buttons() {
		if b.ActionID == actionID {
			button = &b
			break
		}
	}
	if button == nil {
		return "", fmt.Errorf("%w: %s on %s", ErrNoButton, actionID, ts)
	}
	return s.deliverClick(u, msg, *button)
}

// ClickStale presses a button the message no longer shows, as a Slack
// client with an out-of-date view of the message can.
func (s *Server) ClickStale(user, channel, ts, actionID, value string) (string, error) {
	s.mu.Lock()
	u, found := s.users[user]
	m := s.find(channel, ts)
	var msg Message
	if m != nil {
		msg = *m
	}
	s.mu.Unlock()
	if !found || m == nil {
		return "", fmt.Errorf("slacksim: no user %s or message %s", user, ts)
	}
	return s.deliverClick(u, msg, Button{ActionID: actionID, BlockID: "twokey_actions", Value: value, Text: actionID})
}

func (s *Server) deliverClick(u User, msg Message, button Button) (string, error) {
	channel, ts := msg.Channel, msg.TS
	var blocks any
	_ = json.Unmarshal(msg.Blocks, &blocks)
	team, enterprise := s.where(u)
	payload := map[string]any{
		"type":         "block_actions",
		"user":         map[string]any{"id": u.ID, "username": u.Name, "name": u.Name, "team_id": u.TeamID},
		"api_app_id":   "A0TWOKEY",
		"token":        "verification-token-unused",
		"container":    map[string]any{"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": msg.Ephemeral},
		"trigger_id":   s.newTrigger(u.ID),
		"team":         map[string]any{"id": team, "domain": "twokey"},
		"channel":      map[string]any{"id": channel, "name": s.channelName(channel)},
		"message":      map[string]any{"type": "message", "ts": ts, "text": msg.Text, "user": msg.User, "blocks": blocks},
		"response_url": s.newResponseURL(u.ID, channel, ts),
		"actions": []map[string]any{{
			"action_id": button.ActionID, "block_id": button.BlockID, "value": button.Value, "type": "button",
			"text":      map[string]any{"type": "plain_text", "text": button.Text},
			"action_ts": fmt.Sprintf("%d.%06d", time.Now().Unix(), time.Now().Nanosecond()/1000),
		}},
	}
	if enterprise != "" {
		payload["enterprise"] = map[string]any{"id": enterprise, "name": "org"}
		payload["is_enterprise_install"] = false
	}
	return s.Deliver("interactive", payload)
}

// where is the workspace and organization a user's command or click comes
// from: an organization-level user (Enterprise Grid: TeamID is E…) acts in
// this workspace, as a member of their organization.
func (s *Server) where(u User) (team, enterprise string) {
	team, enterprise = u.TeamID, s.o.EnterpriseID
	if strings.HasPrefix(u.TeamID, "E") {
		team, enterprise = s.o.TeamID, u.Enterprise
	}
	return team, enterprise
}

func (s *Server) channelName(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.channels[id]
}

// Button is an interactive button in a message.
type Button struct {
	ActionID, BlockID, Value, Text, Style string
}

// Buttons lists the message's buttons.
func (m Message) Buttons() []Button {
	var blocks []struct {
		Type     string `json:"type"`
		BlockID  string `json:"block_id"`
		Elements []struct {
			Type     string  `json:"type"`
			ActionID string  `json:"action_id"`
			Value    string  `json:"value"`
			Style    string  `json:"style"`
			Text     textObj `json:"text"`
		} `json:"elements"`
	}
	_ = json.Unmarshal(m.Blocks, &blocks)
	var out []Button
	for _, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		for _, e := range b.Elements {
			if e.Type == "button" {
				out = append(out, Button{ActionID: e.ActionID, BlockID: b.BlockID, Value: e.Value, Text: e.Text.Text, Style: e.Style})
			}
		}
	}
	return out
}

// Content is every piece of text in the message, its blocks included, one
// per line: what a person would read.
func (m Message) Content() string {
	var parts []string
	if m.Text != "" {
		parts = append(parts, m.Text)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if t, isString := x["text"].(string); isString {
				parts = append(parts, t)
			}
			for k, c := range x {
				if k != "text" || !isStr(c) {
					walk(c)
				}
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	var blocks any
	_ = json.Unmarshal(m.Blocks, &blocks)
	walk(blocks)
	return strings.Join(parts, "\n")
}

func isStr(v any) bool {
	_, ok := v.(string)
	return ok
}
