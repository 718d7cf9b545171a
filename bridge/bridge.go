// Package bridge carries SIP over WebSocket (RFC 7118) between browser agents and the SIP
// router. The HTTP plane authenticates the upgrade (JWT, Origin, subprotocol "sip") and hands
// the socket here with the user its token names; from then on the socket belongs to the bridge:
// one reader and one writer goroutine, ping/pong with a dead-peer timeout, a read limit, a
// per-socket message rate, and one SIP message per frame each way. The socket closes when the
// token it opened with expires, unless a refresh of the same session has moved that (Extend).
//
// Every frame from the browser is checked before the router sees it: it must parse as SIP
// (Content-Length is added where the browser left it out, as RFC 7118 allows), and a request
// may only act as the socket's user (REGISTER for that AOR, new requests From that user).
// Anything else gets 400 or 403 on the socket and goes no further.
package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dualgate/dualgate/sip/sanity"
)

// Router is what the bridge needs from the SIP plane: a SIP flow per agent.
type Router interface {
	// AttachAgent returns a stream the router serves as user's SIP flow; closing it ends the
	// flow and removes the user's bindings on it.
	AttachAgent(user string) (net.Conn, error)
}

// Config bounds each socket.
type Config struct {
	MaxFrame     int           `yaml:"max_frame"`     // largest frame accepted, bytes; default 65535
	PingInterval time.Duration `yaml:"ping_interval"` // default 25s
	PongTimeout  time.Duration `yaml:"pong_timeout"`  // no pong within this after a ping: the peer is dead; default 10s
	Rate         float64       `yaml:"rate"`          // SIP messages per second per socket; default 20
	Burst        int           `yaml:"burst"`         // default 40
}

func (c Config) withDefaults() Config {
	if c.MaxFrame == 0 {
		c.MaxFrame = 65535
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.Rate == 0 {
		c.Rate, c.Burst = 20, 40
	}
	return c
}

// Bridge serves agent sockets.
type Bridge struct {
	cfg    Config
	router Router
	log    *slog.Logger
	m      *metrics

	mu   sync.Mutex
	live map[sessionKey]map[*deadline]struct{} // sockets with an expiry, by the session that opened them
}

// sessionKey is what a refreshed token may extend: the sockets opened by the same user in the
// same session. The session is part of the key so that one browser refreshing its session
// cannot keep another device's socket (or one opened with a stolen token of an older,
// signed-out session) alive: each socket lives only as long as the session that opened it
// keeps proving itself. Tokens without a sid (some IdPs) share the empty session, so for them
// the binding falls back to the user.
type sessionKey struct{ user, session string }

// New builds a bridge in front of router.
func New(cfg Config, router Router, log *slog.Logger, reg prometheus.Registerer) *Bridge {
	return &Bridge{cfg: cfg.withDefaults(), router: router, log: log, m: newMetrics(reg),
		live: map[sessionKey]map[*deadline]struct{}{}}
}

// ErrExpired closes a socket whose token ran out.
var ErrExpired = errors.New("token expired")

// ErrSignedOut closes the sockets of a session that signed out.
var ErrSignedOut = errors.New("signed out")

// Serve runs one agent socket until it closes, the token expires (expires, zero: never) or ctx
// ends. It always closes ws. session is the token's sid ("" when it has none); Extend moves the
// expiry of the sockets of one user's session.
func (b *Bridge) Serve(ctx context.Context, ws *websocket.Conn, user, session string, expires time.Time) {
	defer ws.Close()
	flow, err := b.router.AttachAgent(user)
	if err != nil {
		b.log.Error("agent socket refused: no SIP flow", "user", user, "error", err)
		closeWith(ws, websocket.CloseTryAgainLater, "sip plane unavailable")
		return
	}
	b.m.sockets.Inc()
	defer b.m.sockets.Dec()
	log := b.log.With("user", user, "remote", ws.RemoteAddr().String())
	log.Info("agent socket open")

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := make(chan []byte, 64) // frames to the browser: router messages and our own answers
	var wg sync.WaitGroup
	wg.Go(func() { b.fromRouter(ctx, flow, out, cancel) })
	wg.Go(func() { b.write(ctx, ws, out, cancel) })
	wg.Go(func() { b.read(ctx, ws, flow, user, out, cancel, log) })
	if !expires.IsZero() {
		key := sessionKey{user, session}
		d := newDeadline(expires, cancel)
		b.track(key, d)
		defer b.untrack(key, d)
	}
	<-ctx.Done()
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrExpired) || errors.Is(cause, ErrSignedOut) {
		closeWith(ws, websocket.ClosePolicyViolation, cause.Error())
	}
	_ = flow.Close()
	_ = ws.Close()
	wg.Wait()
	log.Info("agent socket closed", "reason", fmt.Sprint(cause))
}

// Extend moves the expiry of user's live sockets opened in session to expires, when that is
// later than their current one; it never shortens a socket's life, so replaying an older token
// of the session cannot cut it off. It reports how many sockets moved. The caller has verified
// a token for exactly this user and session expiring at expires.
func (b *Bridge) Extend(user, session string, expires time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for d := range b.live[sessionKey{user, session}] {
		if d.extend(expires) {
			n++
		}
	}
	if n > 0 {
		b.log.Info("agent socket expiry moved", "user", user, "sockets", n, "expires", expires)
	}
	return n
}

// End closes user's live sockets opened in session, at once: the session signed out. A token
// stays valid until its exp (JWTs cannot be recalled), but a socket is a standing grant, and an
// agent who signs out on a shared desk must not leave a phone registered behind. Sockets of
// tokens without a sid are left alone: no logout can name their session.
func (b *Bridge) End(user, session string) int {
	if session == "" {
		return 0
	}
	b.mu.Lock()
	ds := make([]*deadline, 0, len(b.live[sessionKey{user, session}]))
	for d := range b.live[sessionKey{user, session}] {
		ds = append(ds, d)
	}
	b.mu.Unlock()
	n := 0
	for _, d := range ds {
		if d.end(ErrSignedOut) {
			n++
		}
	}
	if n > 0 {
		b.log.Info("agent sockets closed: signed out", "user", user, "sockets", n)
	}
	return n
}

func (b *Bridge) track(k sessionKey, d *deadline) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.live[k] == nil {
		b.live[k] = map[*deadline]struct{}{}
	}
	b.live[k][d] = struct{}{}
}

func (b *Bridge) untrack(k sessionKey, d *deadline) {
	d.stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.live[k], d)
	if len(b.live[k]) == 0 {
		delete(b.live, k)
	}
}

// deadline calls fire once, at a time that may move later while it waits.
type deadline struct {
	mu    sync.Mutex
	at    time.Time
	done  bool
	timer *time.Timer
	fire  func(cause error)
}

func newDeadline(at time.Time, fire func(cause error)) *deadline {
	d := &deadline{at: at, fire: fire}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer = time.AfterFunc(time.Until(at), d.check)
	return d
}

// check runs when the timer goes off. An extend may have raced with the timer (the timer fired
// just before the new time was set), so the time is read again under the lock.
func (d *deadline) check() {
	d.mu.Lock()
	if d.done {
		d.mu.Unlock()
		return
	}
	if left := time.Until(d.at); left > 0 {
		d.timer.Reset(left)
		d.mu.Unlock()
		return
	}
	d.done = true
	d.mu.Unlock()
	d.fire(ErrExpired)
}

// end fires now with cause, unless the deadline already fired or stopped.
func (d *deadline) end(cause error) bool {
	d.mu.Lock()
	if d.done {
		d.mu.Unlock()
		return false
	}
	d.done = true
	d.timer.Stop()
	d.mu.Unlock()
	d.fire(cause)
	return true
}

func (d *deadline) extend(to time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done || !to.After(d.at) {
		return false
	}
	d.at = to
	d.timer.Reset(time.Until(to))
	return true
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	d.timer.Stop()
}

// read takes frames from the browser, checks them and passes them to the router.
func (b *Bridge) read(ctx context.Context, ws *websocket.Conn, flow net.Conn, user string, out chan<- []byte,
	cancel context.CancelCauseFunc, log *slog.Logger) {
	ws.SetReadLimit(int64(b.cfg.MaxFrame))
	deadline := b.cfg.PingInterval + b.cfg.PongTimeout
	_ = ws.SetReadDeadline(time.Now().Add(deadline))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(deadline)) })
	lim := rate.NewLimiter(rate.Limit(b.cfg.Rate), b.cfg.Burst)
	over := 0
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				b.m.refused.WithLabelValues("oversized").Inc()
				log.Warn("oversized frame, closing", "limit", b.cfg.MaxFrame)
			}
			cancel(fmt.Errorf("read: %w", err))
			return
		}
		_ = ws.SetReadDeadline(time.Now().Add(deadline))
		if len(bytes.TrimSpace(data)) == 0 {
			continue // a keepalive CRLF
		}
		if !lim.Allow() {
			b.m.refused.WithLabelValues("rate").Inc()
			if over++; over > b.cfg.Burst {
				log.Warn("agent socket flooding, closing")
				closeWith(ws, websocket.ClosePolicyViolation, "too many messages")
				cancel(errors.New("flood"))
				return
			}
			continue
		}
		over = 0
		msg, answer := b.check(data, user)
		if answer != nil {
			select {
			case out <- answer:
			case <-ctx.Done():
				return
			}
		}
		if msg == nil {
			continue
		}
		b.m.frames.WithLabelValues("in").Inc()
		if _, err := flow.Write(msg); err != nil {
			cancel(fmt.Errorf("to router: %w", err))
			return
		}
	}
}

// check validates one frame. It returns the message to pass on (nil: none) and an answer for
// the browser (nil: none).
func (b *Bridge) check(data []byte, user string) (msg, answer []byte) {
	data = withContentLength(data)
	switch v := sanity.Datagram(data, b.cfg.MaxFrame); v.Action {
	case sanity.Reject:
		b.m.refused.WithLabelValues("malformed").Inc()
		return nil, v.Response
	case sanity.Drop:
		b.m.refused.WithLabelValues("malformed").Inc()
		return nil, nil // nothing to answer to (not SIP, or a broken response)
	}
	m, err := gosip.ParseMessage(data)
	if err != nil {
		b.m.refused.WithLabelValues("malformed").Inc()
		return nil, sanity.Answer(data, 400, "Bad Request")
	}
	req, ok := m.(*gosip.Request)
	if !ok {
		return data, nil // responses are matched by the router's transactions
	}
	if !actsAs(req, user) {
		b.m.refused.WithLabelValues("identity").Inc()
		return nil, sanity.Answer(data, 403, "Forbidden: Not Your Identity")
	}
	return data, nil
}

// actsAs reports whether a request from user's socket stays within user's identity: a
// REGISTER only for the user's AOR, a new request only From the user. In-dialog requests
// (To tag) carry the peer's URI in From when the dialog was opened by the peer; the router
// checks those against its Record-Route.
func actsAs(req *gosip.Request, user string) bool {
	if req.Method == gosip.REGISTER {
		to := req.To()
		return to != nil && to.Address.User == user
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		return true
	}
	if req.Method == gosip.ACK || req.Method == gosip.CANCEL {
		return true // belong to a transaction the router already has
	}
	from := req.From()
	return from != nil && from.Address.User == user
}

// withContentLength adds the Content-Length that RFC 7118 lets browsers leave out: the
// router's stream parser frames messages by it.
func withContentLength(data []byte) []byte {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		return data
	}
	head := data[:end]
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Content-Length")) || bytes.EqualFold(name, []byte("l")) {
			return data
		}
	}
	body := data[end+4:]
	out := make([]byte, 0, len(data)+24)
	out = append(out, head...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

// fromRouterChunk is what fromRouter reads the router's stream with. The goroutine sits in
// that read for the whole life of an idle socket, so it is small: a message larger than a
// chunk (an INVITE with a WebRTC offer) is put together over a few reads.
const fromRouterChunk = 4 << 10

// fromRouter splits the router's stream into SIP messages, one frame each. Only a message
// that spans reads is copied into buf, which is let go once it is sent: an idle socket holds
// the chunk and nothing else.
func (b *Bridge) fromRouter(ctx context.Context, flow net.Conn, out chan<- []byte, cancel context.CancelCauseFunc) {
	var buf []byte
	chunk := make([]byte, fromRouterChunk)
	for {
		n, err := flow.Read(chunk)
		if err != nil {
			cancel(fmt.Errorf("router closed the flow: %w", err))
			return
		}
		data := chunk[:n]
		if len(buf) > 0 {
			buf = append(buf, data...)
			data = buf
		}
		for {
			msg, rest, ok := nextMessage(data)
			if !ok {
				break
			}
			if len(bytes.TrimSpace(msg)) > 0 {
				b.m.frames.WithLabelValues("out").Inc()
				select {
				case out <- append([]byte(nil), msg...):
				case <-ctx.Done():
					return
				}
			}
			data = rest
		}
		switch {
		case len(data) == 0:
			buf = nil
		case len(data) > 2*b.cfg.MaxFrame:
			cancel(errors.New("router sent an unframed message"))
			return
		default:
			buf = append(buf[:0], data...) // the start of the next message (data may alias chunk)
		}
	}
}

// nextMessage cuts one message (head and Content-Length body) off the front of a stream.
func nextMessage(buf []byte) (msg, rest []byte, ok bool) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, buf, false
	}
	n := 0
	for _, line := range bytes.Split(buf[:end], []byte("\r\n")) {
		name, val, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Content-Length")) || bytes.EqualFold(name, []byte("l")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(val)))
		}
	}
	total := end + 4 + n
	if len(buf) < total {
		return nil, buf, false
	}
	return buf[:total], buf[total:], true
}

// write is the socket's only writer: frames, and pings on a timer.
func (b *Bridge) write(ctx context.Context, ws *websocket.Conn, out <-chan []byte, cancel context.CancelCauseFunc) {
	ping := time.NewTicker(b.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-out:
			_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				cancel(fmt.Errorf("write: %w", err))
				return
			}
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
				cancel(fmt.Errorf("ping: %w", err))
				return
			}
		}
	}
}

func closeWith(ws *websocket.Conn, code int, text string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}

type metrics struct {
	sockets prometheus.Gauge
	frames  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "gateway", Subsystem: "bridge", Name: "sockets",
			Help: "Agent WebSockets open."}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gateway", Subsystem: "bridge", Name: "frames_total",
			Help: "SIP messages carried, by direction (in: from browsers)."}, []string{"direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "gateway", Subsystem: "bridge", Name: "refused_total",
			Help: "Frames refused, by reason (malformed, identity, rate, oversized)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.sockets, m.frames, m.refused)
	}
	return m
}
