package slacksim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

func blocksJSON(t *testing.T, blocks ...slack.Block) string {
	t.Helper()
	b, err := json.Marshal(blocks)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidateEnforcesSlackLimits(t *testing.T) {
	section := func(n int) slack.Block {
		return slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", strings.Repeat("é", n), false, false), nil, nil)
	}
	many := make([]slack.Block, MaxBlocks+1)
	for i := range many {
		many[i] = slack.NewDividerBlock()
	}
	tests := []struct {
		name, text, blocks, want string
	}{
		{"plain text", "hello", "", ""},
		{"empty", "", "", "no_text"},
		{"section at the limit", "x", blocksJSON(t, section(MaxSectionText)), ""},
		{"section over the limit", "x", blocksJSON(t, section(MaxSectionText+1)), "invalid_blocks"},
		{"fifty blocks", "x", blocksJSON(t, many[:MaxBlocks]...), ""},
		{"fifty-one blocks", "x", blocksJSON(t, many...), "invalid_blocks"},
		{"header too long", "x", blocksJSON(t, slack.NewHeaderBlock(slack.NewTextBlockObject("plain_text", strings.Repeat("h", 151), false, false))), "invalid_blocks"},
		{"text too long", strings.Repeat("t", MaxMessageText+1), "", "msg_too_long"},
		{"not json", "x", "[{", "invalid_blocks_format"},
		{"unknown block", "x", `[{"type":"marquee"}]`, "invalid_blocks"},
	}
	for _, tt := range tests {
		if got := Validate(tt.text, tt.blocks); got != tt.want {
			t.Errorf("%s: Validate = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestSlackGoTalksToIt connects the real slack-go clients: Web API calls,
// Socket Mode hello, an envelope and its ack, and a requested reconnect.
func TestSlackGoTalksToIt(t *testing.T) {
	s := New(Options{PingInterval: 200 * time.Millisecond})
	s.AddUser(User{ID: "UA", Name: "a"})
	s.AddChannel("C1", "general")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer s.Close()

	api := slack.New("xoxb-sim", slack.OptionAPIURL(srv.URL+"/api/"), slack.OptionAppLevelToken("xapp-sim"))
	if _, err := slack.New("xoxb-wrong", slack.OptionAPIURL(srv.URL+"/api/")).AuthTest(); err == nil {
		t.Fatal("wrong token accepted")
	}
	auth, err := api.AuthTest()
	if err != nil || auth.TeamID != "T0TWOKEY" {
		t.Fatalf("auth.test: %v %+v", err, auth)
	}
	_, ts, err := api.PostMessage("C1", slack.MsgOptionText("hi", false))
	if err != nil {
		t.Fatal(err)
	}
	big := slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", strings.Repeat("x", 3001), false, false), nil, nil)
	if _, _, _, err := api.UpdateMessage("C1", ts, slack.MsgOptionBlocks(big)); err == nil || !strings.Contains(err.Error(), "invalid_blocks") {
		t.Fatalf("oversize update: %v", err)
	}
	if _, err := api.PostEphemeral("C1", "UA", slack.MsgOptionText("psst", false)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := api.UpdateMessage("C1", "1.2", slack.MsgOptionText("x", false)); err == nil {
		t.Fatal("updated a message that does not exist")
	}

	sm := socketmode.New(api)
	go func() { _ = sm.Run() }()
	if err := s.WaitConnected(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	id, err := s.SlashCommand("UA", "C1", "help")
	if err != nil {
		t.Fatal(err)
	}
	var got slack.SlashCommand
	for evt := range sm.Events {
		if evt.Type == socketmode.EventTypeSlashCommand {
			got = evt.Data.(slack.SlashCommand)
			sm.Ack(*evt.Request)
			break
		}
	}
	if got.Text != "help" || got.UserID != "UA" || got.TeamID != "T0TWOKEY" {
		t.Fatalf("slash command = %+v", got)
	}
	if err := s.WaitAcked(id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// A requested reconnect: slack-go opens a fresh socket.
	before := s.nextConnID()
	s.Disconnect()
	deadline := time.Now().Add(10 * time.Second)
	for s.nextConnID() == before {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect after disconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(s.Calls()) < 5 {
		t.Fatalf("calls not recorded: %d", len(s.Calls()))
	}
}

func (s *Server) nextConnID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextConn
}

// TestNotInChannel: Slack refuses the bot's posts in a channel it is not a
// member of, and the slash command's response_url answers there instead:
// ephemeral to its user by default, for 30 minutes and 5 times.
func TestNotInChannel(t *testing.T) {
	s := New(Options{PingInterval: 200 * time.Millisecond})
	s.AddUser(User{ID: "UA", Name: "a"})
	s.AddChannel("C1", "general")
	s.AddChannelWithoutBot("C2", "elsewhere")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer s.Close()
	api := slack.New("xoxb-sim", slack.OptionAPIURL(srv.URL+"/api/"), slack.OptionAppLevelToken("xapp-sim"))

	_, ts, err := api.PostMessage("C1", slack.MsgOptionText("hi", false))
	if err != nil {
		t.Fatal(err)
	}
	notIn := func(what string, err error) {
		t.Helper()
		var se slack.SlackErrorResponse
		if !errors.As(err, &se) || se.Err != "not_in_channel" {
			t.Errorf("%s in a channel without the bot: %v, want not_in_channel", what, err)
		}
	}
	_, _, err = api.PostMessage("C2", slack.MsgOptionText("hi", false))
	notIn("chat.postMessage", err)
	_, err = api.PostEphemeral("C2", "UA", slack.MsgOptionText("psst", false))
	notIn("chat.postEphemeral", err)
	s.RemoveBot("C1") // removed after posting: no more edits either
	_, _, _, err = api.UpdateMessage("C1", ts, slack.MsgOptionText("edited", false))
	notIn("chat.update", err)
	s.InviteBot("C1")
	if _, _, _, err := api.UpdateMessage("C1", ts, slack.MsgOptionText("edited", false)); err != nil {
		t.Fatalf("update after /invite: %v", err)
	}

	sm := socketmode.New(api)
	go func() { _ = sm.Run() }()
	if err := s.WaitConnected(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SlashCommand("UA", "C2", "help"); err != nil {
		t.Fatal(err)
	}
	var cmd slack.SlashCommand
	for evt := range sm.Events {
		if evt.Type == socketmode.EventTypeSlashCommand {
			cmd = evt.Data.(slack.SlashCommand)
			sm.Ack(*evt.Request)
			break
		}
	}
	if !strings.HasPrefix(cmd.ResponseURL, srv.URL+"/response/") {
		t.Fatalf("response_url = %q, want one of the server's", cmd.ResponseURL)
	}
	for i := 1; i <= ResponseURLUses; i++ {
		_, err := api.PostEphemeral("C2", "UA", slack.MsgOptionText(fmt.Sprintf("answer %d", i), false),
			slack.MsgOptionResponseURL(cmd.ResponseURL, slack.ResponseTypeEphemeral))
		if err != nil {
			t.Fatalf("answer %d through the response_url: %v", i, err)
		}
	}
	if _, err := api.PostEphemeral("C2", "UA", slack.MsgOptionText("one too many", false),
		slack.MsgOptionResponseURL(cmd.ResponseURL, slack.ResponseTypeEphemeral)); err == nil {
		t.Error("a sixth answer through one response_url was taken")
	}
	var answers []Message
	for _, m := range s.Messages() {
		if m.Channel == "C2" {
			answers = append(answers, m)
		}
	}
	if len(answers) != ResponseURLUses || !answers[0].Ephemeral || answers[0].For != "UA" || answers[0].Text != "answer 1" {
		t.Fatalf("answers in C2 = %+v", answers)
	}

	// Another command, its URL aged past 30 minutes: refused.
	if _, err := s.SlashCommand("UA", "C2", "help"); err != nil {
		t.Fatal(err)
	}
	for evt := range sm.Events {
		if evt.Type == socketmode.EventTypeSlashCommand {
			cmd = evt.Data.(slack.SlashCommand)
			sm.Ack(*evt.Request)
			break
		}
	}
	s.ExpireResponseURLs()
	if err := slack.PostWebhook(cmd.ResponseURL, &slack.WebhookMessage{Text: "late", ResponseType: slack.ResponseTypeEphemeral}); err == nil {
		t.Error("an expired response_url answered")
	}
}

// TestRefuseSockets: while Slack refuses sockets, a dropped bot stays
// disconnected; once it takes them again, slack-go reconnects.
func TestRefuseSockets(t *testing.T) {
	s := New(Options{PingInterval: 200 * time.Millisecond})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	defer s.Close()
	api := slack.New("xoxb-sim", slack.OptionAPIURL(srv.URL+"/api/"), slack.OptionAppLevelToken("xapp-sim"))
	sm := socketmode.New(api)
	go func() {
		for range sm.Events {
		}
	}()
	go func() { _ = sm.Run() }()
	if err := s.WaitConnected(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s.RefuseSockets(true)
	s.Drop()
	if err := s.WaitConnected(1, time.Second); err == nil {
		t.Fatal("reconnected while sockets are refused")
	}
	s.RefuseSockets(false)
	if err := s.WaitConnected(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
