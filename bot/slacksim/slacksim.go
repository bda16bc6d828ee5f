// Package slacksim is a local Slack: the Web API methods twokey calls and
// Socket Mode over a websocket, speaking Slack's wire format so that the real
// slack-go client connects to it unchanged. The end-to-end tests drive it as
// Slack users would — slash commands, button clicks — and read back what the
// bot posted; `twokey demo` serves a web page on top of it.
//
// It enforces the Block Kit limits Slack enforces (50 blocks, 3,000
// characters per section), records every API call and every envelope's
// acknowledgement, and can disconnect or drop sockets mid-flow, or refuse
// them for a while. Channels may lack the bot, which Slack then refuses to
// let post there (not_in_channel); slash commands and clicks carry a
// response_url served here, which answers for 30 minutes and 5 times.
package slacksim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	TeamID string // default T0TWOKEY
	// EnterpriseID, if set, makes the workspace part of an Enterprise Grid
	// organization (E…): commands and clicks carry it.
	EnterpriseID string
	BotToken     string // the only xoxb- token accepted; default "xoxb-sim"
	AppToken     string // the only xapp- token accepted; default "xapp-sim"
	BotUserID    string // default UBOT
	// PingInterval is how often sockets are pinged; slack-go drops a
	// connection that is not pinged for 30s. Default 5s.
	PingInterval time.Duration
	// AckTimeout is how long an envelope waits for its ack before Slack
	// would redeliver it; 0 disables automatic redelivery.
	AckTimeout time.Duration
}

// User is a workspace member.
type User struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RealName string `json:"real_name"`
	TeamID   string `json:"team_id"`
	// Enterprise is the Grid organization of a user whose TeamID is an
	// organization (E…): the workspace's own (default), or another's —
	// a user of another organization in a shared channel.
	Enterprise string `json:"enterprise_id,omitempty"`
	Title      string `json:"title,omitempty"` // as in a Slack profile: what the demo page shows next to the name
}

// Message is something posted to a channel, a thread or one user.
type Message struct {
	Channel   string          `json:"channel"`
	TS        string          `json:"ts"`
	ThreadTS  string          `json:"thread_ts,omitempty"`
	User      string          `json:"user"`
	Text      string          `json:"text"`
	Blocks    json.RawMessage `json:"blocks,omitempty"`
	Ephemeral bool            `json:"ephemeral,omitempty"`
	For       string          `json:"for,omitempty"` // the user an ephemeral message is shown to
	Edits     int             `json:"edits,omitempty"`
	Seq       int64           `json:"seq"` // order of the last change
	Files     []File          `json:"files,omitempty"`
}

// File is an uploaded file shared in a message.
type File struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Title string `json:"title"`
	Size  int    `json:"size"`
}

// Call is one recorded Web API request.
type Call struct {
	Method string
	Params map[string]string
	Error  string // the error Slack answered with, if any
}

// Server is a local Slack workspace.
type Server struct {
	o Options

	mu        sync.Mutex
	changed   *sync.Cond
	seq       int64
	users     map[string]User
	groups    map[string][]string
	channels  map[string]string // id → name
	outside   map[string]bool   // channels the bot is not a member of
	responses map[string]*responseURL
	pruned    time.Time // when dead response URLs were last forgotten
	base      string    // where the bot reaches the server: response_urls point here
	refusing  bool      // sockets are refused (RefuseSockets)
	messages  []*Message
	calls     []Call
	conns     []*conn
	nextConn  int
	envelopes map[string]*envelope
	envOrder  []string
	ts        int64
	tsBase    int64
	closed    bool
	listeners map[int]func(Event)
	nextSub   int
	files     map[string]*upload
	views     map[string]*View
	triggers  map[string]trigger
	limits    map[string]*rateLimit // RateLimit (ratelimit.go)
}

// upload is a file between files.getUploadURLExternal and its completion.
type upload struct {
	name    string
	length  int
	content []byte
}

// Event tells a listener (the demo page) that something changed.
type Event struct {
	Kind        string   `json:"kind"` // message, ack, connection, view
	Message     *Message `json:"message,omitempty"`
	View        *View    `json:"view,omitempty"` // opened or changed; without blocks: closed
	Connections int      `json:"connections"`    // sockets taking envelopes
}

// New returns a server with no users, groups or channels.
func New(o Options) *Server {
	if o.TeamID == "" {
		o.TeamID = "T0TWOKEY"
	}
	if o.BotToken == "" {
		o.BotToken = "xoxb-sim"
	}
	if o.AppToken == "" {
		o.AppToken = "xapp-sim"
	}
	if o.BotUserID == "" {
		o.BotUserID = "UBOT"
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 5 * time.Second
	}
	s := &Server{
		o: o, users: map[string]User{}, groups: map[string][]string{}, channels: map[string]string{},
		envelopes: map[string]*envelope{}, tsBase: time.Now().Unix(), listeners: map[int]func(Event){},
		files: map[string]*upload{}, views: map[string]*View{}, triggers: map[string]trigger{},
		outside: map[string]bool{}, responses: map[string]*responseURL{},
	}
	s.changed = sync.NewCond(&s.mu)
	return s
}

// Options returns the server's settings, defaults filled in.
func (s *Server) Options() Options { return s.o }

// AddUser adds a member of the workspace (team defaults to the server's).
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.TeamID == "" {
		u.TeamID = s.o.TeamID
	}
	if strings.HasPrefix(u.TeamID, "E") && u.Enterprise == "" {
		u.Enterprise = s.o.EnterpriseID
	}
	if u.RealName == "" {
		u.RealName = u.Name
	}
	s.users[u.ID] = u
}

// Users lists the members.
func (s *Server) Users() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	var us []User
	for _, u := range s.users {
		us = append(us, u)
	}
	slices.SortFunc(us, func(a, b User) int { return strings.Compare(a.ID, b.ID) })
	return us
}

// SetGroup sets the members of a user group.
func (s *Server) SetGroup(id string, members ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[id] = slices.Clone(members)
}

// AddChannel adds a channel the bot is a member of.
func (s *Server) AddChannel(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[id] = name
}

// Close disconnects every socket.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := slices.Clone(s.conns)
	s.changed.Broadcast()
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Subscribe registers fn to be called (without the lock held) after every
// change, until the returned function is called.
func (s *Server) Subscribe(fn func(Event)) (unsubscribe func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSub++
	id := s.nextSub
	s.listeners[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.listeners, id)
	}
}

// notify must be called with s.mu held; listeners run after it is released
// by the caller through the returned function.
func (s *Server) bump(ev Event) func() {
	s.seq++
	ev.Connections = len(s.live())
	s.changed.Broadcast()
	ls := make([]func(Event), 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	return func() {
		for _, l := range ls {
			l(ev)
		}
	}
}

// Messages returns a copy of every message, in posting order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
	}
	return out
}

// Calls returns every Web API call so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// ErrTimeout is returned by Wait when the condition never held.
var ErrTimeout = errors.New("slacksim: timed out waiting")

// Wait blocks until cond holds for the messages, or timeout passes.
func (s *Server) Wait(timeout time.Duration, cond func(msgs []Message) bool) ([]Message, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.changed.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		msgs := make([]Message, len(s.messages))
		for i, m := range s.messages {
			msgs[i] = *m
		}
		if cond(msgs) {
			return msgs, nil
		}
		if time.Now().After(deadline) || s.closed {
			return msgs, ErrTimeout
		}
		s.changed.Wait()
	}
}

func (s *Server) nextTS() string {
	s.ts++
	return fmt.Sprintf("%d.%06d", s.tsBase, s.ts)
}

// Handler serves the Web API under /api/, Socket Mode at /socket, and the
// demo page under /ui/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.serveAPI)
	mux.HandleFunc("/socket", s.serveSocket)
	mux.HandleFunc("POST /upload/{id}", s.serveUpload)
	mux.HandleFunc("POST /response/{id}", s.serveResponse)
	s.uiRoutes(mux)
	return mux
}

// FileContent returns an uploaded file's content.
func (s *Server) FileContent(id string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.files[id]
	if !ok {
		return nil, false
	}
	return slices.Clone(f.content), true
}
