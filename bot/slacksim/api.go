package slacksim

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Slack's limits, as the real API enforces them.
const (
	MaxBlocks       = 50
	MaxSectionText  = 3000
	MaxHeaderText   = 150
	MaxMessageText  = 40000
	MaxFieldText    = 2000
	MaxFields       = 10
	MaxButtonText   = 75
	MaxActionValue  = 2000
	MaxActionsItems = 25
	MaxContextItems = 10
)

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	s.noteBase(r)
	if s.limited(w, method) {
		return
	}
	params, err := readParams(r)
	if err != nil {
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	token := params["token"]
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		token = strings.TrimPrefix(h, "Bearer ")
	}
	delete(params, "token")

	want := s.o.BotToken
	if method == "apps.connections.open" {
		want = s.o.AppToken
	}
	var resp map[string]any
	switch {
	case token == "":
		resp = fail("not_authed")
	case token != want:
		resp = fail("invalid_auth")
	default:
		resp = s.call(r, method, params)
	}
	s.mu.Lock()
	c := Call{Method: method, Params: params}
	if ok, _ := resp["ok"].(bool); !ok {
		c.Error, _ = resp["error"].(string)
	}
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	writeJSON(w, resp)
}

func (s *Server) call(r *http.Request, method string, p map[string]string) map[string]any {
	switch method {
	case "auth.test":
		return ok(map[string]any{"url": "https://twokey-sim.slack.com/", "team": "twokey", "user": "twokey",
			"team_id": s.o.TeamID, "user_id": s.o.BotUserID, "bot_id": "B0TWOKEY"})
	case "apps.connections.open":
		scheme := "ws"
		if r.TLS != nil {
			scheme = "wss"
		}
		return ok(map[string]any{"url": scheme + "://" + r.Host + "/socket?ticket=" + randomID()})
	case "chat.postMessage":
		return s.post(p, false)
	case "chat.postEphemeral":
		return s.post(p, true)
	case "chat.update":
		return s.update(p)
	case "usergroups.users.list":
		s.mu.Lock()
		defer s.mu.Unlock()
		members, found := s.groups[p["usergroup"]]
		if !found {
			return fail("no_such_subteam")
		}
		return ok(map[string]any{"users": append([]string{}, members...)})
	case "users.info":
		s.mu.Lock()
		defer s.mu.Unlock()
		u, found := s.users[p["user"]]
		if !found {
			return fail("user_not_found")
		}
		return ok(map[string]any{"user": map[string]any{"id": u.ID, "name": u.Name, "real_name": u.RealName,
			"team_id": u.TeamID, "profile": map[string]any{"display_name": u.Name, "real_name": u.RealName}}})
	case "chat.getPermalink":
		s.mu.Lock()
		m := s.find(p["channel"], p["message_ts"])
		s.mu.Unlock()
		if m == nil {
			return fail("message_not_found")
		}
		return ok(map[string]any{"channel": m.Channel, "permalink": fmt.Sprintf("https://twokey-sim.slack.com/archives/%s/p%s",
			m.Channel, strings.ReplaceAll(m.TS, ".", ""))})
	case "files.getUploadURLExternal":
		n, err := strconv.Atoi(p["length"])
		if err != nil || n <= 0 || p["filename"] == "" {
			return fail("invalid_arguments")
		}
		id := "F" + strings.ToUpper(randomID()[:10])
		s.mu.Lock()
		s.files[id] = &upload{name: p["filename"], length: n}
		s.mu.Unlock()
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return ok(map[string]any{"upload_url": scheme + "://" + r.Host + "/upload/" + id, "file_id": id})
	case "files.completeUploadExternal":
		return s.completeUpload(p)
	case "views.open":
		return s.openView(p)
	case "views.update":
		return s.updateView(p)
	case "conversations.open":
		users := p["users"]
		if users == "" || strings.Contains(users, ",") {
			return fail("invalid_arguments")
		}
		s.mu.Lock()
		_, known := s.users[users]
		s.mu.Unlock()
		if !known {
			return fail("user_not_found")
		}
		return ok(map[string]any{"channel": map[string]any{"id": DM(users)}})
	}
	return fail("unknown_method")
}

// DM is the channel of a user's direct messages with the app.
func DM(user string) string { return "D" + strings.TrimPrefix(user, "U") }

func (s *Server) post(p map[string]string, ephemeral bool) map[string]any {
	channel := p["channel"]
	if channel == "" {
		return fail("channel_not_found")
	}
	if e := Validate(p["text"], p["blocks"]); e != "" {
		return fail(e)
	}
	if ephemeral && p["user"] == "" {
		return fail("user_not_found")
	}
	s.mu.Lock()
	if _, known := s.channels[channel]; !known && !strings.HasPrefix(channel, "D") {
		s.mu.Unlock()
		return fail("channel_not_found")
	}
	if !s.member(channel) {
		s.mu.Unlock()
		return fail("not_in_channel")
	}
	m := &Message{Channel: channel, TS: s.nextTS(), ThreadTS: p["thread_ts"], User: s.o.BotUserID,
		Text: p["text"], Blocks: rawBlocks(p["blocks"]), Ephemeral: ephemeral}
	if ephemeral {
		m.For = p["user"]
	}
	if m.ThreadTS != "" && s.find(channel, m.ThreadTS) == nil {
		s.mu.Unlock()
		return fail("thread_not_found")
	}
	s.messages = append(s.messages, m)
	m.Seq = s.seq + 1
	cp := *m
	after := s.bump(Event{Kind: "message", Message: &cp})
	s.mu.Unlock()
	after()
	if ephemeral {
		return ok(map[string]any{"message_ts": m.TS})
	}
	return ok(map[string]any{"channel": channel, "ts": cp.TS, "message": map[string]any{"text": cp.Text, "ts": cp.TS}})
}

func (s *Server) update(p map[string]string) map[string]any {
	if e := Validate(p["text"], p["blocks"]); e != "" {
		return fail(e)
	}
	s.mu.Lock()
	if !s.member(p["channel"]) {
		s.mu.Unlock()
		return fail("not_in_channel")
	}
	m := s.find(p["channel"], p["ts"])
	if m == nil || m.Ephemeral {
		s.mu.Unlock()
		return fail("message_not_found")
	}
	m.Text, m.Blocks = p["text"], rawBlocks(p["blocks"])
	m.Edits++
	m.Seq = s.seq + 1
	cp := *m
	after := s.bump(Event{Kind: "message", Message: &cp})
	s.mu.Unlock()
	after()
	// cp, taken under the lock: another update may be changing m by now.
	return ok(map[string]any{"channel": cp.Channel, "ts": cp.TS, "text": cp.Text})
}

// find must be called with s.mu held.
func (s *Server) find(channel, ts string) *Message {
	for _, m := range s.messages {
		if m.Channel == channel && m.TS == ts {
			return m
		}
	}
	return nil
}

func rawBlocks(b string) json.RawMessage {
	if b == "" {
		return nil
	}
	return json.RawMessage(b)
}

// Validate checks a message against Slack's limits and returns the error
// Slack would answer with, or "".
func Validate(text, blocks string) string {
	if utf8.RuneCountInString(text) > MaxMessageText {
		return "msg_too_long"
	}
	if blocks == "" {
		if text == "" {
			return "no_text"
		}
		return ""
	}
	var bs []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(blocks), &bs); err != nil {
		return "invalid_blocks_format"
	}
	if len(bs) > MaxBlocks {
		return "invalid_blocks"
	}
	ids := map[string]bool{}
	for _, b := range bs {
		var typ, id string
		_ = json.Unmarshal(b["type"], &typ)
		_ = json.Unmarshal(b["block_id"], &id)
		if id != "" {
			if ids[id] {
				return "invalid_blocks"
			}
			ids[id] = true
		}
		if !validBlock(typ, b) {
			return "invalid_blocks"
		}
	}
	return ""
}

type textObj struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func validBlock(typ string, b map[string]json.RawMessage) bool {
	textLen := func(raw json.RawMessage, limit int) bool {
		if raw == nil {
			return true
		}
		var t textObj
		if json.Unmarshal(raw, &t) != nil {
			return false
		}
		n := utf8.RuneCountInString(t.Text)
		return n >= 1 && n <= limit
	}
	switch typ {
	case "section":
		var fields []json.RawMessage
		_ = json.Unmarshal(b["fields"], &fields)
		if b["text"] == nil && len(fields) == 0 {
			return false
		}
		if len(fields) > MaxFields || !textLen(b["text"], MaxSectionText) {
			return false
		}
		for _, f := range fields {
			if !textLen(f, MaxFieldText) {
				return false
			}
		}
		return true
	case "header":
		return b["text"] != nil && textLen(b["text"], MaxHeaderText)
	case "context":
		var els []json.RawMessage
		_ = json.Unmarshal(b["elements"], &els)
		if len(els) == 0 || len(els) > MaxContextItems {
			return false
		}
		for _, e := range els {
			if !textLen(e, MaxSectionText) {
				return false
			}
		}
		return true
	case "actions":
		var els []struct {
			Type     string          `json:"type"`
			ActionID string          `json:"action_id"`
			Value    string          `json:"value"`
			Text     json.RawMessage `json:"text"`
		}
		if json.Unmarshal(b["elements"], &els) != nil || len(els) == 0 || len(els) > MaxActionsItems {
			return false
		}
		for _, e := range els {
			if e.Type == "button" && (!textLen(e.Text, MaxButtonText) || len(e.Value) > MaxActionValue || len(e.ActionID) > 255) {
				return false
			}
		}
		return true
	case "divider", "rich_text", "image", "input", "file":
		return true
	}
	return false
}

func readParams(r *http.Request) (map[string]string, error) {
	p := map[string]string{}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case r.Method == http.MethodPost && ct == "application/json":
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if len(body) > 0 {
			if err := json.Unmarshal(body, &m); err != nil {
				return nil, err
			}
		}
		for k, v := range m {
			if s, isString := v.(string); isString {
				p[k] = s
			} else {
				b, _ := json.Marshal(v)
				p[k] = string(b)
			}
		}
	case ct == "multipart/form-data":
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			return nil, err
		}
		for k, v := range r.MultipartForm.Value {
			p[k] = v[0]
		}
	default:
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		for k, v := range r.Form {
			p[k] = v[0]
		}
	}
	return p, nil
}

func ok(m map[string]any) map[string]any {
	m["ok"] = true
	return m
}

func fail(e string) map[string]any { return map[string]any{"ok": false, "error": e} }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// serveUpload receives a file's bytes, as Slack's upload URL does.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var content []byte
	if err := r.ParseMultipartForm(64 << 20); err == nil && r.MultipartForm != nil && len(r.MultipartForm.File["file"]) > 0 {
		f, err := r.MultipartForm.File["file"][0].Open()
		if err == nil {
			content, _ = io.ReadAll(f)
			f.Close()
		}
	}
	s.mu.Lock()
	u, found := s.files[id]
	if found {
		u.content = content
	}
	s.mu.Unlock()
	if !found {
		http.Error(w, "unknown upload", http.StatusNotFound)
		return
	}
	_, _ = io.WriteString(w, "OK - "+strconv.Itoa(len(content)))
}

// completeUpload shares uploaded files in a channel or thread.
func (s *Server) completeUpload(p map[string]string) map[string]any {
	var files []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if json.Unmarshal([]byte(p["files"]), &files) != nil || len(files) == 0 {
		return fail("invalid_arguments")
	}
	channel := p["channel_id"]
	s.mu.Lock()
	if channel != "" && !s.member(channel) {
		s.mu.Unlock()
		return fail("not_in_channel")
	}
	m := &Message{Channel: channel, TS: s.nextTS(), ThreadTS: p["thread_ts"], User: s.o.BotUserID, Text: p["initial_comment"]}
	var summaries []map[string]any
	for _, f := range files {
		u, found := s.files[f.ID]
		if !found || u.content == nil {
			s.mu.Unlock()
			return fail("file_not_found")
		}
		if len(u.content) != u.length {
			s.mu.Unlock()
			return fail("file_size_mismatch")
		}
		m.Files = append(m.Files, File{ID: f.ID, Name: u.name, Title: f.Title, Size: len(u.content)})
		summaries = append(summaries, map[string]any{"id": f.ID, "title": f.Title})
	}
	if channel != "" {
		if m.ThreadTS != "" && s.find(channel, m.ThreadTS) == nil {
			s.mu.Unlock()
			return fail("thread_not_found")
		}
		s.messages = append(s.messages, m)
		m.Seq = s.seq + 1
	}
	cp := *m
	after := s.bump(Event{Kind: "message", Message: &cp})
	s.mu.Unlock()
	after()
	return ok(map[string]any{"files": summaries})
}
