package slacksim

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

//go:embed ui
var uiFiles embed.FS

// The page's API, under /ui/: the workspace as JSON, slash commands and
// clicks as any user, and a websocket of changes.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	static, _ := fs.Sub(uiFiles, "ui")
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /ui/api/state", s.uiState)
	mux.HandleFunc("POST /ui/api/command", s.uiCommand)
	mux.HandleFunc("POST /ui/api/click", s.uiClick)
	mux.HandleFunc("POST /ui/api/submit", s.uiSubmit)
	mux.HandleFunc("POST /ui/api/close", s.uiClose)
	mux.HandleFunc("GET /ui/api/events", s.uiEvents)
	mux.HandleFunc("GET /ui/api/files/{id}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := s.FileContent(r.PathValue("id"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(b)
	})
}

type uiChannel struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (s *Server) uiState(w http.ResponseWriter, _ *http.Request) {
	msgs := s.Messages()
	s.mu.Lock()
	var chans []uiChannel
	for id, name := range s.channels {
		chans = append(chans, uiChannel{ID: id, Name: name})
	}
	conns := len(s.live())
	views := []View{}
	for _, v := range s.views {
		views = append(views, *v)
	}
	s.mu.Unlock()
	slices.SortFunc(chans, func(a, b uiChannel) int { return strings.Compare(a.Name, b.Name) })
	var users []User
	for _, u := range s.Users() {
		if u.TeamID == s.o.TeamID {
			users = append(users, u)
		}
	}
	writeJSON(w, map[string]any{
		"team": s.o.TeamID, "bot": map[string]string{"id": s.o.BotUserID, "name": "twokey"},
		"users": users, "channels": chans, "messages": msgs, "connections": conns, "views": views,
	})
}

type uiAction struct {
	User     string            `json:"user"`
	Channel  string            `json:"channel"`
	Text     string            `json:"text"`
	TS       string            `json:"ts"`
	ActionID string            `json:"action_id"`
	ViewID   string            `json:"view_id"`
	Values   map[string]string `json:"values"`
}

func readAction(w http.ResponseWriter, r *http.Request) (uiAction, bool) {
	var a uiAction
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&a); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]string{"error": "bad request"})
		return a, false
	}
	return a, true
}

func (s *Server) uiCommand(w http.ResponseWriter, r *http.Request) {
	a, ok := readAction(w, r)
	if !ok {
		return
	}
	if _, err := s.SlashCommand(a.User, a.Channel, a.Text); err != nil {
		writeJSON(w, map[string]string{"error": uiError(err)})
		return
	}
	writeJSON(w, map[string]bool{"ok": true})
}

func (s *Server) uiClick(w http.ResponseWriter, r *http.Request) {
	a, ok := readAction(w, r)
	if !ok {
		return
	}
	if _, err := s.Click(a.User, a.Channel, a.TS, a.ActionID); err != nil {
		writeJSON(w, map[string]string{"error": uiError(err)})
		return
	}
	writeJSON(w, map[string]bool{"ok": true})
}

func (s *Server) uiSubmit(w http.ResponseWriter, r *http.Request) {
	a, ok := readAction(w, r)
	if !ok {
		return
	}
	errs, err := s.SubmitView(a.User, a.ViewID, a.Values)
	if err != nil {
		writeJSON(w, map[string]string{"error": uiError(err)})
		return
	}
	writeJSON(w, map[string]any{"ok": true, "errors": errs})
}

func (s *Server) uiClose(w http.ResponseWriter, r *http.Request) {
	a, ok := readAction(w, r)
	if !ok {
		return
	}
	s.CloseView(a.User, a.ViewID)
	writeJSON(w, map[string]bool{"ok": true})
}

func uiError(err error) string {
	switch {
	case strings.Contains(err.Error(), ErrNoConnection.Error()):
		return "twokey is not connected; is the bot running?"
	case strings.Contains(err.Error(), ErrNoButton.Error()):
		return "that button is gone: the message changed"
	case strings.Contains(err.Error(), "is required"):
		return strings.TrimPrefix(err.Error(), "slacksim: ")
	}
	return err.Error()
}

// uiEvents streams every change to the page.
func (s *Server) uiEvents(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	events := make(chan Event, 256)
	var once sync.Once
	done := make(chan struct{})
	stop := func() { once.Do(func() { close(done) }) }
	unsubscribe := s.Subscribe(func(e Event) {
		select {
		case <-done:
		case events <- e:
		default: // a page that cannot keep up reloads on reconnect
			stop()
		}
	})
	defer unsubscribe()
	go func() { // notice the page going away
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				stop()
				return
			}
		}
	}()
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-done:
			return
		case e := <-events:
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := ws.WriteJSON(e); err != nil {
				stop()
				return
			}
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
				stop()
				return
			}
		}
	}
}
