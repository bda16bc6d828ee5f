package slacksim

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// Slack's limits on a response_url: it answers for 30 minutes, 5 times.
const (
	ResponseURLTTL  = 30 * time.Minute
	ResponseURLUses = 5
)

// responseURL is one response_url handed out with a slash command or a
// click: who may be answered, where, and (for a click) the message clicked.
type responseURL struct {
	user, channel, messageTS string
	at                       time.Time
	uses                     int
}

// InviteBot makes the bot a member of channel, as `/invite @twokey` does.
func (s *Server) InviteBot(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.outside, channel)
}

// RemoveBot takes the bot out of channel (or adds the channel without it):
// from then on Slack refuses the bot's posts there with not_in_channel.
// Slash commands typed there still reach the bot, with a response_url.
func (s *Server) RemoveBot(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outside[channel] = true
}

// AddChannelWithoutBot adds a channel the bot is not a member of.
func (s *Server) AddChannelWithoutBot(id, name string) {
	s.AddChannel(id, name)
	s.RemoveBot(id)
}

// member reports whether the bot may write in channel; s.mu must be held.
// Direct-message channels are the bot's own.
func (s *Server) member(channel string) bool { return !s.outside[channel] }

// noteBase remembers the address the bot reached the server at, which
// response_urls point to.
func (s *Server) noteBase(r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	s.mu.Lock()
	s.base = scheme + "://" + r.Host
	s.mu.Unlock()
}

// newResponseURL returns a response_url for an answer to user in channel
// (about the message at ts, for a click).
func (s *Server) newResponseURL(user, channel, ts string) string {
	id := randomID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.pruned) > time.Minute { // forget the dead ones, now and then
		s.pruned = time.Now()
		for k, r := range s.responses {
			if time.Since(r.at) > ResponseURLTTL {
				delete(s.responses, k)
			}
		}
	}
	s.responses[id] = &responseURL{user: user, channel: channel, messageTS: ts, at: time.Now()}
	base := s.base
	if base == "" {
		base = "https://hooks.slack.invalid" // no one has called the API yet
	}
	return base + "/response/" + id
}

// ExpireResponseURLs ages every response_url handed out so far past
// Slack's 30 minutes.
func (s *Server) ExpireResponseURLs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.responses {
		r.at = r.at.Add(-ResponseURLTTL - time.Second)
	}
}

// serveResponse answers a POST to a response_url as Slack does: an
// ephemeral message to the user who typed the command or clicked (the
// default), a message in the channel ("in_channel"), or, for a click, a
// replacement of the clicked message. Bot membership does not matter here:
// that is what response_urls are for.
func (s *Server) serveResponse(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text            string          `json:"text"`
		Blocks          json.RawMessage `json:"blocks"`
		ResponseType    string          `json:"response_type"`
		ThreadTS        string          `json:"thread_ts"`
		ReplaceOriginal bool            `json:"replace_original"`
		DeleteOriginal  bool            `json:"delete_original"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(raw, &body) != nil {
		answer(w, http.StatusBadRequest, "invalid_payload")
		return
	}
	blocks := ""
	if len(body.Blocks) > 0 && string(body.Blocks) != "null" {
		blocks = string(body.Blocks)
	}
	s.mu.Lock()
	ru, found := s.responses[r.PathValue("id")]
	var why string
	switch {
	case !found:
		why = "no_such_url"
	case time.Since(ru.at) > ResponseURLTTL:
		why = "expired_url"
	case ru.uses >= ResponseURLUses:
		why = "used_url"
	case body.DeleteOriginal:
		why = "delete_original_unsupported" // twokey never deletes
	case body.ReplaceOriginal && ru.messageTS == "":
		why = "no_original"
	}
	if why == "" {
		why = Validate(body.Text, blocks)
	}
	if why != "" {
		s.calls = append(s.calls, Call{Method: "response_url", Error: why})
		s.mu.Unlock()
		code := http.StatusNotFound
		if found {
			code = http.StatusBadRequest
		}
		answer(w, code, why)
		return
	}
	ru.uses++
	s.calls = append(s.calls, Call{Method: "response_url", Params: map[string]string{
		"channel": ru.channel, "user": ru.user, "response_type": body.ResponseType}})
	var m *Message
	if body.ReplaceOriginal {
		m = s.find(ru.channel, ru.messageTS)
		if m == nil {
			s.mu.Unlock()
			answer(w, http.StatusNotFound, "message_not_found")
			return
		}
		m.Text, m.Blocks = body.Text, rawBlocks(blocks)
		m.Edits++
	} else {
		m = &Message{Channel: ru.channel, TS: s.nextTS(), ThreadTS: body.ThreadTS, User: s.o.BotUserID,
			Text: body.Text, Blocks: rawBlocks(blocks)}
		if body.ResponseType != "in_channel" {
			m.Ephemeral, m.For = true, ru.user
		}
		s.messages = append(s.messages, m)
	}
	m.Seq = s.seq + 1
	cp := *m
	after := s.bump(Event{Kind: "message", Message: &cp})
	s.mu.Unlock()
	after()
	writeJSON(w, map[string]any{"ok": true})
}

func answer(w http.ResponseWriter, code int, e string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(fail(e))
}
