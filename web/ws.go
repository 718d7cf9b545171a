package web

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dualgate/dualgate/web/auth"
)

// AgentSockets takes over an agent's WebSocket once the HTTP plane has authenticated it: the
// bridge. It closes the socket at expires unless Extend has moved that later.
type AgentSockets interface {
	// Adopt takes over the socket of user, opened with a token of session (its sid, "" if
	// none), and returns at once. It calls done once the socket has closed; the socket lives
	// until then, or until ctx ends.
	Adopt(ctx context.Context, ws *websocket.Conn, user, session string, expires time.Time, done func())
	// Extend moves the expiry of user's sockets opened in session to expires (never earlier),
	// after the HTTP plane has verified a newer token of that user and session. It reports how
	// many sockets moved.
	Extend(user, session string, expires time.Time) int
	// End closes user's sockets opened in session (a non-empty sid) at once: it signed out.
	// It reports how many closed.
	End(user, session string) int
}

// wsGate holds the upgrade's own limits, the per-IP upgrade rate (by address class) and the
// per-user cap on open sockets, and the sockets' goroutines, which the server waits for when
// it stops.
type wsGate struct {
	limit   *ipLimiter
	maxUser int
	mu      sync.Mutex
	open    map[string]int
	closing bool
	running sync.WaitGroup // adopted sockets not yet closed
}

// newWSGate takes the upgrade rate of every address class (ws_per_minute) and the per-user
// cap, which is the same for everyone: it is per user, not per address.
func newWSGate(classes []limitClass, perUser int) *wsGate {
	return &wsGate{limit: newIPLimiter("ws", classes, func(c RateLimitConfig) (float64, int) { return perMinute(c.WSPerMinute) }),
		maxUser: perUser, open: map[string]int{}}
}

func (g *wsGate) acquire(user string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxUser > 0 && g.open[user] >= g.maxUser {
		return false
	}
	g.open[user]++
	return true
}

// adopt counts a socket the server must wait for when it stops, unless it is stopping; the
// socket's done must call finish.
func (g *wsGate) adopt() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.running.Add(1)
	return true
}

func (g *wsGate) finish() { g.running.Done() }

// drain waits for every socket; it runs once the sockets' context has ended.
func (g *wsGate) drain() {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	g.running.Wait()
}

func (g *wsGate) release(user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[user]--; g.open[user] <= 0 {
		delete(g.open, user)
	}
}

// serveWS upgrades GET /ws for an agent (RFC 7118). Everything is checked before the upgrade,
// so a refused browser gets a plain HTTP answer it can show: 401 without a valid token (the
// verifier middleware), 403 for a foreign Origin or a token without the agent role, 400
// without the "sip" subprotocol, 429 past the per-user socket cap. The socket then belongs to
// the bridge until it closes or the server stops (the request context ends with the server).
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	claims, _ := auth.ClaimsFrom(r.Context())
	if !claims.HasRole("agent") {
		writeJSONError(w, http.StatusForbidden, "agents only")
		return
	}
	if !s.originAllowed(r) {
		writeJSONError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), "sip") {
		writeJSONError(w, http.StatusBadRequest, `WebSocket subprotocol "sip" required (RFC 7118)`)
		return
	}
	if s.deps.Agents == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "no SIP bridge")
		return
	}
	if !s.ws.acquire(claims.Subject) {
		_, class := clientOf(r)
		s.m.limited.WithLabelValues("ws_per_user", s.ips.className(class)).Inc()
		w.Header().Set("Retry-After", "5")
		writeJSONError(w, http.StatusTooManyRequests, "too many sockets for this user")
		return
	}
	// Buffers: a socket spends nearly all its life idle, so it reads through 1 KiB of its own
	// (a larger frame is read in pieces; the HTTP connection's 4 KiB reader is let go) and
	// writes through a buffer lent from a pool for the length of a frame.
	up := websocket.Upgrader{
		Subprotocols:    []string{"sip"},
		CheckOrigin:     func(*http.Request) bool { return true }, // checked above, with our rules
		ReadBufferSize:  1 << 10,
		WriteBufferPool: wsWriteBuffers,
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.ws.release(claims.Subject)
		return // the upgrader has answered
	}
	s.log.Info("agent socket upgraded", "user", claims.Subject, "remote", r.RemoteAddr)
	// The bridge takes the socket and this handler returns: net/http's goroutine for the
	// connection, deep in handlers with the whole request still referenced, would otherwise
	// sit under every idle agent for hours.
	user := claims.Subject
	if !s.ws.adopt() {
		s.ws.release(user)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server stopping"),
			time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	s.deps.Agents.Adopt(s.life, ws, user, claims.SessionID, claims.ExpiresAt, func() {
		s.ws.release(user)
		s.ws.finish()
	})
}

// wsWriteBuffers lends agent sockets a write buffer per frame.
var wsWriteBuffers = &sync.Pool{}
