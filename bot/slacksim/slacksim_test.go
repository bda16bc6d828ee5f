package slacksim

import (
	"encoding/json"
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
