package sip

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Agents: browser WebRTC agents reach the router through the bridge (RFC 7118 SIP over
// WebSocket). sipgo cannot adopt a WebSocket someone else upgraded, so the bridge hands us one
// in-process stream per agent, served like a TCP connection. Each stream gets a unique
// address in 0.0.0.0/8, which no packet from the network can carry, and the router remembers
// which user's JWT opened it: requests on it are that user's, without digest, and only that
// user's (the bridge checks each frame too).

// agentRegistry maps the address of each live agent stream to its user.
type agentRegistry struct {
	mu    sync.RWMutex
	seq   uint32            // the last address handed out, as 24 bits of 0.0.0.0/8
	users map[string]string // stream address → user
	ln    *pipeListener
}

// add gives a new stream of user the next free address. Addresses wrap after 2^24 - 1
// streams (a busy gateway gets there in weeks) and skip those still live; the one handed out
// before an address comes round again closed 16 million streams ago.
func (a *agentRegistry) add(user string) (*net.TCPAddr, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.users) >= 1<<24-1 {
		return nil, "", errors.New("agent streams exhausted")
	}
	for {
		if a.seq++; a.seq >= 1<<24 {
			a.seq = 1
		}
		n := a.seq
		addr := &net.TCPAddr{IP: net.IPv4(0, byte(n>>16), byte(n>>8), byte(n)), Port: 1}
		key := addr.String()
		if _, live := a.users[key]; !live {
			a.users[key] = user
			return addr, key, nil
		}
	}
}

func newAgentRegistry() *agentRegistry {
	return &agentRegistry{users: map[string]string{}, ln: newPipeListener()}
}

// AttachAgent opens a SIP flow for user, whom the HTTP plane authenticated, over agent: sipgo
// reads the agent's messages from it and the router writes the agent's messages to it, as on a
// TCP connection. agent is closed once the flow ends; closing the returned flow ends it and
// drops its bindings at once.
func (r *Router) AttachAgent(user string, agent io.ReadWriteCloser) (io.Closer, error) {
	addr, key, err := r.agents.add(user)
	if err != nil {
		return nil, err
	}
	c := &agentConn{ReadWriteCloser: agent, remote: addr, local: r.agents.ln.Addr(), onClose: func() {
		r.agents.mu.Lock()
		delete(r.agents.users, key)
		r.agents.mu.Unlock()
		r.connGone(connID("tcp", key))
	}}
	if err := r.agents.ln.push(c); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// agentOf returns the user whose agent stream a request came on.
func (r *Router) agentOf(transport, source string) (string, bool) {
	if transport != "TCP" {
		return "", false
	}
	if ap, err := netip.ParseAddrPort(source); err != nil || !ap.Addr().Is4() || ap.Addr().As4()[0] != 0 {
		return "", false
	}
	r.agents.mu.RLock()
	defer r.agents.mu.RUnlock()
	u, ok := r.agents.users[source]
	return u, ok
}

// agentConn is an agent's flow as sipgo sees it: a stream connection with the address the
// router knows it by. Its reads and writes are the bridge's socket's; sipgo's reader of it is
// the socket's reader, so an agent needs no goroutine to move bytes between the two.
type agentConn struct {
	io.ReadWriteCloser
	remote, local net.Addr
	once          sync.Once
	onClose       func()
}

func (c *agentConn) RemoteAddr() net.Addr { return c.remote }
func (c *agentConn) LocalAddr() net.Addr  { return c.local }

func (c *agentConn) Close() error {
	c.once.Do(func() {
		c.onClose()
		_ = c.ReadWriteCloser.Close()
	})
	return nil
}

// Deadlines: sipgo sets none on the streams it serves, and the flow needs none of its own: the
// bridge's socket has a read deadline (pings), and a write waits at most for the socket's
// writer, which gives a browser that stops reading 10 s and then ends the flow.
func (c *agentConn) SetDeadline(time.Time) error      { return nil }
func (c *agentConn) SetReadDeadline(time.Time) error  { return nil }
func (c *agentConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*agentConn)(nil)

// pipeListener is a net.Listener whose connections are pushed in-process.
type pipeListener struct {
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) push(c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	case <-time.After(5 * time.Second):
		return errors.New("sip plane is not serving agent streams")
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Addr is what sipgo records as the local side of agent streams.
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(0, 0, 0, 0), Port: 1} }
