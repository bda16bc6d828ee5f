package slacksim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one Socket Mode connection.
type conn struct {
	id       int
	draining bool // told to reconnect: gets no new envelopes
	ws       *websocket.Conn
	wmu      sync.Mutex
	once     sync.Once
	done     chan struct{}
}

func (c *conn) write(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteJSON(v)
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}

// envelope is one delivery Slack makes over Socket Mode.
type envelope struct {
	ID         string
	Type       string
	Payload    json.RawMessage
	Acked      bool
	AckPayload json.RawMessage
	Deliveries int
	Conns      []int     // the connections it was sent on, in order
	Sent       time.Time // when it was first sent
	AckedAt    time.Time // when its first ack came
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("ticket") == "" {
		http.Error(w, "no ticket", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	refusing := s.refusing
	s.mu.Unlock()
	if refusing {
		http.Error(w, "socket mode is unavailable", http.StatusServiceUnavailable)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.nextConn++
	c := &conn{id: s.nextConn, ws: ws, done: make(chan struct{})}
	s.conns = append(s.conns, c)
	n := len(s.live())
	after := s.bump(Event{Kind: "connection"})
	s.mu.Unlock()
	after()

	defer func() {
		c.close()
		s.mu.Lock()
		s.conns = slices.DeleteFunc(s.conns, func(x *conn) bool { return x == c })
		after := s.bump(Event{Kind: "connection"})
		s.mu.Unlock()
		after()
	}()

	if err := c.write(map[string]any{
		"type": "hello", "num_connections": n,
		"connection_info": map[string]any{"app_id": "A0TWOKEY"},
		"debug_info":      map[string]any{"host": "slacksim", "approximate_connection_time": 3600},
	}); err != nil {
		return
	}
	go s.ping(c)
	for {
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := ws.ReadJSON(&ack); err != nil {
			return
		}
		s.mu.Lock()
		if e, found := s.envelopes[ack.EnvelopeID]; found {
			if !e.Acked {
				e.AckedAt = time.Now()
			}
			e.Acked, e.AckPayload = true, ack.Payload
		}
		after := s.bump(Event{Kind: "ack"})
		s.mu.Unlock()
		after()
	}
}

func (s *Server) ping(c *conn) {
	t := time.NewTicker(s.o.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.wmu.Lock()
			err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second))
			c.wmu.Unlock()
			if err != nil {
				c.close()
				return
			}
		}
	}
}

// ErrNoConnection means no bot is connected over Socket Mode.
var ErrNoConnection = errors.New("slacksim: no socket mode connection")

// Connections is how many sockets are open and taking envelopes.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live())
}

// live returns the connections that take envelopes; s.mu must be held.
func (s *Server) live() []*conn {
	var out []*conn
	for _, c := range s.conns {
		if !c.draining {
			out = append(out, c)
		}
	}
	return out
}

// WaitConnected waits until at least n sockets are open.
func (s *Server) WaitConnected(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for s.Connections() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %d of %d after %v", ErrNoConnection, s.Connections(), n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Deliver sends a new envelope of type typ ("slash_commands", "interactive")
// to one connected socket, taking them in turn, and returns its ID.
func (s *Server) Deliver(typ string, payload any) (string, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	e := &envelope{ID: randomID(), Type: typ, Payload: raw}
	s.mu.Lock()
	s.envelopes[e.ID] = e
	s.mu.Unlock()
	if err := s.send(e, ""); err != nil {
		return e.ID, err
	}
	if s.o.AckTimeout > 0 {
		go s.retryUnacked(e.ID)
	}
	return e.ID, nil
}

// Redeliver sends an envelope again, as Slack does when an ack is late,
// with retry_attempt and retry_reason set.
func (s *Server) Redeliver(id, reason string) error {
	s.mu.Lock()
	e, found := s.envelopes[id]
	s.mu.Unlock()
	if !found {
		return fmt.Errorf("slacksim: no envelope %s", id)
	}
	return s.send(e, reason)
}

func (s *Server) retryUnacked(id string) {
	for attempt := 0; attempt < 3; attempt++ {
		time.Sleep(s.o.AckTimeout)
		s.mu.Lock()
		e, found := s.envelopes[id]
		acked := found && e.Acked
		s.mu.Unlock()
		if !found || acked {
			return
		}
		_ = s.send(e, "timeout")
	}
}

func (s *Server) send(e *envelope, retryReason string) error {
	s.mu.Lock()
	conns := s.live()
	if len(conns) == 0 {
		s.mu.Unlock()
		return ErrNoConnection
	}
	c := conns[e.Deliveries%len(conns)]
	if e.Deliveries == 0 {
		c = conns[len(s.envOrder)%len(conns)]
		s.envOrder = append(s.envOrder, e.ID)
		e.Sent = time.Now()
	}
	e.Conns = append(e.Conns, c.id)
	msg := map[string]any{
		"envelope_id": e.ID, "type": e.Type, "payload": e.Payload,
		"accepts_response_payload": e.Type == "slash_commands",
		"retry_attempt":            e.Deliveries, "retry_reason": retryReason,
	}
	e.Deliveries++
	s.mu.Unlock()
	return c.write(msg)
}

// DeliveredTo lists the connections an envelope was sent on.
func (s *Server) DeliveredTo(id string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, found := s.envelopes[id]; found {
		return slices.Clone(e.Conns)
	}
	return nil
}

// Acked reports whether an envelope was acknowledged.
func (s *Server) Acked(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, found := s.envelopes[id]
	return found && e.Acked
}

// AckLatency is the time from an envelope's first sending to its first
// ack, and whether it was acked.
func (s *Server) AckLatency(id string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, found := s.envelopes[id]
	if !found || !e.Acked {
		return 0, false
	}
	return e.AckedAt.Sub(e.Sent), true
}

// WaitAcked waits for an envelope's ack.
func (s *Server) WaitAcked(id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !s.Acked(id) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: ack of %s", ErrTimeout, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Disconnect asks every connected bot to reconnect, as Slack does when it
// refreshes a connection.
func (s *Server) Disconnect() {
	s.mu.Lock()
	conns := slices.Clone(s.conns)
	for _, c := range conns {
		c.draining = true
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.write(map[string]any{"type": "disconnect", "reason": "refresh_requested",
			"debug_info": map[string]any{"host": "slacksim"}})
	}
}

// Drop closes every socket without warning, like a network failure.
func (s *Server) Drop() {
	s.mu.Lock()
	conns := slices.Clone(s.conns)
	for _, c := range conns {
		c.draining = true
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// RefuseSockets makes Socket Mode refuse new connections (true), as in an
// outage, or take them again (false). Open sockets stay: Drop them.
func (s *Server) RefuseSockets(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing = refuse
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
