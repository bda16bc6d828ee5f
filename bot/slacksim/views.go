package slacksim

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// View is an open modal, as views.open created it and views.update left it.
type View struct {
	ID              string            `json:"id"`
	User            string            `json:"user"` // whose screen it is on
	CallbackID      string            `json:"callback_id"`
	PrivateMetadata string            `json:"private_metadata,omitempty"`
	Title           string            `json:"title"`
	Submit          string            `json:"submit,omitempty"`
	Close           string            `json:"close,omitempty"`
	Blocks          json.RawMessage   `json:"blocks"`
	Errors          map[string]string `json:"errors,omitempty"` // from the last refused submission, by block ID
}

// Modal limits, as Slack enforces them.
const (
	MaxViewTitle  = 24
	MaxViewBlocks = 100
)

// trigger remembers who a trigger_id was handed to; views.open needs one.
// Slack's expire after 3 seconds; these after a minute, for slow test
// machines.
type trigger struct {
	user string
	at   time.Time
}

const triggerTTL = time.Minute

// newTrigger returns a trigger_id for an interaction by user. s.mu must not
// be held.
func (s *Server) newTrigger(user string) string {
	id := fmt.Sprintf("%d.%s", time.Now().Unix(), randomID())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.triggers[id] = trigger{user: user, at: time.Now()}
	return id
}

type viewRequest struct {
	Type            string          `json:"type"`
	CallbackID      string          `json:"callback_id"`
	PrivateMetadata string          `json:"private_metadata"`
	Title           *textObj        `json:"title"`
	Submit          *textObj        `json:"submit"`
	Close           *textObj        `json:"close"`
	Blocks          json.RawMessage `json:"blocks"`
}

// parseView checks a view the way Slack does and returns the error Slack
// would answer with, or "".
func parseView(raw string) (viewRequest, string) {
	var v viewRequest
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return v, "invalid_arguments"
	}
	if v.Type != "modal" || v.Title == nil {
		return v, "invalid_arguments"
	}
	if n := utf8.RuneCountInString(v.Title.Text); n == 0 || n > MaxViewTitle {
		return v, "invalid_arguments"
	}
	var blocks []map[string]json.RawMessage
	if err := json.Unmarshal(v.Blocks, &blocks); err != nil || len(blocks) > MaxViewBlocks {
		return v, "invalid_arguments"
	}
	inputs := 0
	for _, b := range blocks {
		var typ string
		_ = json.Unmarshal(b["type"], &typ)
		if typ == "input" {
			inputs++
			if b["label"] == nil || b["element"] == nil {
				return v, "invalid_arguments"
			}
		} else if !validBlock(typ, b) {
			return v, "invalid_arguments"
		}
	}
	if inputs > 0 && v.Submit == nil {
		return v, "invalid_arguments" // Slack: a view with inputs needs a submit button
	}
	return v, ""
}

func (s *Server) openView(p map[string]string) map[string]any {
	v, bad := parseView(p["view"])
	if bad != "" {
		return fail(bad)
	}
	s.mu.Lock()
	t, found := s.triggers[p["trigger_id"]]
	delete(s.triggers, p["trigger_id"]) // a trigger opens one view
	if !found || time.Since(t.at) > triggerTTL {
		s.mu.Unlock()
		return fail("invalid_trigger_id")
	}
	view := &View{ID: "V" + strings.ToUpper(randomID()[:10]), User: t.user}
	fillView(view, v)
	s.views[view.ID] = view
	cp := *view
	after := s.bump(Event{Kind: "view", View: &cp})
	s.mu.Unlock()
	after()
	return ok(map[string]any{"view": viewJSON(cp)})
}

func (s *Server) updateView(p map[string]string) map[string]any {
	v, bad := parseView(p["view"])
	if bad != "" {
		return fail(bad)
	}
	s.mu.Lock()
	view, found := s.views[p["view_id"]]
	if !found {
		s.mu.Unlock()
		return fail("not_found")
	}
	fillView(view, v)
	cp := *view
	after := s.bump(Event{Kind: "view", View: &cp})
	s.mu.Unlock()
	after()
	return ok(map[string]any{"view": viewJSON(cp)})
}

func fillView(view *View, v viewRequest) {
	view.CallbackID, view.PrivateMetadata, view.Title, view.Blocks = v.CallbackID, v.PrivateMetadata, v.Title.Text, v.Blocks
	view.Submit, view.Close = "", ""
	if v.Submit != nil {
		view.Submit = v.Submit.Text
	}
	if v.Close != nil {
		view.Close = v.Close.Text
	}
}

func viewJSON(v View) map[string]any {
	var blocks any
	_ = json.Unmarshal(v.Blocks, &blocks)
	return map[string]any{
		"id": v.ID, "type": "modal", "callback_id": v.CallbackID, "private_metadata": v.PrivateMetadata,
		"title": map[string]any{"type": "plain_text", "text": v.Title}, "blocks": blocks,
		"state": map[string]any{"values": map[string]any{}}, "hash": randomID(),
	}
}

// Views lists the modals open on user's screen.
func (s *Server) Views(user string) []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []View
	for _, v := range s.views {
		if v.User == user {
			out = append(out, *v)
		}
	}
	slices.SortFunc(out, func(a, b View) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// WaitView waits for a modal with callbackID on user's screen.
func (s *Server) WaitView(user, callbackID string, timeout time.Duration) (View, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, v := range s.Views(user) {
			if v.CallbackID == callbackID {
				return v, nil
			}
		}
		if time.Now().After(deadline) {
			return View{}, fmt.Errorf("%w: no %s view for %s", ErrTimeout, callbackID, user)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ErrNoView means the user has no such view open.
var ErrNoView = errors.New("slacksim: no such view")

// SubmitView submits a modal as user, with values typed into its inputs
// (block ID → value; for a select, the chosen option's value). It waits for
// the app's acknowledgement: errors it returns there (by block ID) leave the
// view open and are returned; otherwise the view closes.
func (s *Server) SubmitView(user, viewID string, values map[string]string) (map[string]string, error) {
	s.mu.Lock()
	v, found := s.views[viewID]
	u := s.users[user]
	var view View
	if found {
		view = *v
	}
	s.mu.Unlock()
	if !found || view.User != user {
		return nil, fmt.Errorf("%w: %s for %s", ErrNoView, viewID, user)
	}
	state, err := stateValues(view.Blocks, values)
	if err != nil {
		return nil, err
	}
	payload := viewJSON(view)
	payload["state"] = map[string]any{"values": state}
	id, err := s.Deliver("interactive", map[string]any{
		"type": "view_submission", "team": map[string]any{"id": u.TeamID, "domain": "twokey"},
		"user":       map[string]any{"id": u.ID, "username": u.Name, "name": u.Name, "team_id": u.TeamID},
		"api_app_id": "A0TWOKEY", "token": "verification-token-unused", "trigger_id": s.newTrigger(user),
		"view": payload, "response_urls": []any{}, "is_enterprise_install": false,
	})
	if err != nil {
		return nil, err
	}
	if err := s.WaitAcked(id, 10*time.Second); err != nil {
		return nil, err
	}
	s.mu.Lock()
	ack := s.envelopes[id].AckPayload
	s.mu.Unlock()
	var resp struct {
		ResponseAction string            `json:"response_action"`
		Errors         map[string]string `json:"errors"`
	}
	_ = json.Unmarshal(ack, &resp)
	s.mu.Lock()
	var after func()
	if resp.ResponseAction == "errors" && len(resp.Errors) > 0 {
		if v, ok := s.views[viewID]; ok {
			v.Errors = resp.Errors
			cp := *v
			after = s.bump(Event{Kind: "view", View: &cp})
		}
	} else {
		delete(s.views, viewID)
		after = s.bump(Event{Kind: "view", View: &View{ID: viewID, User: user}})
	}
	s.mu.Unlock()
	after()
	if resp.ResponseAction == "errors" {
		return resp.Errors, nil
	}
	return nil, nil
}

// CloseView closes a modal without submitting it, as the Cancel button does.
func (s *Server) CloseView(user, viewID string) {
	s.mu.Lock()
	v, found := s.views[viewID]
	if !found || v.User != user {
		s.mu.Unlock()
		return
	}
	delete(s.views, viewID)
	after := s.bump(Event{Kind: "view", View: &View{ID: viewID, User: user}})
	s.mu.Unlock()
	after()
}

// stateValues builds view.state.values for the typed values: each input
// block's element, by its action ID, with the value in the element's shape.
func stateValues(blocks json.RawMessage, values map[string]string) (map[string]any, error) {
	var bs []struct {
		Type     string `json:"type"`
		BlockID  string `json:"block_id"`
		Optional bool   `json:"optional"`
		Element  struct {
			Type     string `json:"type"`
			ActionID string `json:"action_id"`
			Options  []struct {
				Text  textObj `json:"text"`
				Value string  `json:"value"`
			} `json:"options"`
		} `json:"element"`
	}
	if err := json.Unmarshal(blocks, &bs); err != nil {
		return nil, err
	}
	state := map[string]any{}
	for _, b := range bs {
		if b.Type != "input" {
			continue
		}
		val, given := values[b.BlockID]
		var el map[string]any
		switch b.Element.Type {
		case "static_select":
			el = map[string]any{"type": "static_select", "selected_option": nil}
			if given {
				i := slices.IndexFunc(b.Element.Options, func(o struct {
					Text  textObj `json:"text"`
					Value string  `json:"value"`
				}) bool {
					return o.Value == val
				})
				if i < 0 {
					return nil, fmt.Errorf("slacksim: %q is not an option of %s", val, b.BlockID)
				}
				o := b.Element.Options[i]
				el["selected_option"] = map[string]any{"text": o.Text, "value": o.Value}
			}
		default:
			el = map[string]any{"type": b.Element.Type, "value": val}
		}
		if !given && !b.Optional {
			// Slack itself refuses to submit a required input left empty.
			return nil, fmt.Errorf("slacksim: %s is required", b.BlockID)
		}
		state[b.BlockID] = map[string]any{b.Element.ActionID: el}
	}
	return state, nil
}
