package devstack

import (
	"net"
	"sync"
)

// Link is a TCP proxy on 127.0.0.1 to a target address that can be cut like
// a network partition: while cut, what either side sends is lost (the
// connections stay open, as they do when packets are dropped), and nothing
// sent meanwhile arrives after Heal.
type Link struct {
	Addr   string
	target string
	ln     net.Listener

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewLink listens on a free port and forwards each connection to target.
func NewLink(target string) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Partition drops everything sent either way until Heal.
func (l *Link) Partition() { l.set(true) }

// Heal forwards again.
func (l *Link) Heal() { l.set(false) }

func (l *Link) set(cut bool) {
	l.mu.Lock()
	l.cut = cut
	l.mu.Unlock()
}

func (l *Link) isCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Close stops listening, closes every connection and waits for the copies.
func (l *Link) Close() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	_ = l.ln.Close()
	l.wg.Wait()
}

// track keeps the connections for Close, unless the link is closed.
func (l *Link) track(cs ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	for _, c := range cs {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		down, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		if !l.track(down, up) {
			_ = down.Close()
			_ = up.Close()
			return
		}
		l.wg.Add(2)
		go l.copy(up, down)
		go l.copy(down, up)
	}
}

// copy forwards from src to dst, dropping what arrives while the link is
// cut, and closes both when either side ends.
func (l *Link) copy(dst, src net.Conn) {
	defer l.wg.Done()
	defer func() {
		_ = dst.Close()
		_ = src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.isCut() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
