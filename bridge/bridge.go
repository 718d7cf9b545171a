// Package bridge carries SIP over WebSocket (RFC 7118) between browser agents and the SIP
// router. The HTTP plane authenticates the upgrade (JWT, Origin, subprotocol "sip") and hands
// the socket here with the user its token names; from then on the socket belongs to the bridge:
// one reader (the router's reader of the agent's flow) and one writer at a time, ping/pong
// with a dead-peer timeout, a read limit, a per-socket message rate, and one SIP message per
// frame each way. The socket closes when the token it opened with expires, unless a refresh
// of the same session has moved that (Extend).
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
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dualgate/dualgate/sip/sanity"
)

// Router is what the bridge needs from the SIP plane: a SIP flow per agent.
type Router interface {
	// AttachAgent opens user's SIP flow over agent. The router reads the agent's messages
	// from agent as a stream (a message may take several reads) on a goroutine of its own,
	// which thereby is the socket's reader, and writes its messages for the agent to it (a
	// write may hold part of a message, or several). Once the flow has ended, whichever side
	// ended it, the router closes agent. Closing the returned flow ends it and removes the
	// user's bindings on it before it returns.
	AttachAgent(user string, agent io.ReadWriteCloser) (io.Closer, error)
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

// Adopt takes over one agent socket and returns at once; done is called, once, after the
// socket has closed: it closed, the token expired (expires, zero: never), the session signed
// out, the router ended the flow, or ctx ended. session is the token's sid ("" when it has
// none); Extend moves the expiry of the sockets of one user's session.
//
// An idle socket has one goroutine: the router's reader of the flow, which reads the socket
// through socket.Read. Frames to the browser queue on the socket and a writer goroutine runs
// while there are any (never two at once, so frames keep their order and gorilla its single
// writer); pings come from a timer. The router's messages are framed on the goroutine that
// writes them. An idle agent costs little more than its TLS connection and that one goroutine,
// which is what lets one gateway hold tens of thousands of them (bench/ws-bench.sh).
func (b *Bridge) Adopt(ctx context.Context, ws *websocket.Conn, user, session string, expires time.Time, done func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	log := b.log.With("user", user, "remote", ws.RemoteAddr().String())
	s := &socket{b: b, ws: ws, user: user, log: log, ctx: ctx, cancel: cancel,
		out:  make(chan []byte, 16),
		lim:  rate.NewLimiter(rate.Limit(b.cfg.Rate), b.cfg.Burst),
		idle: b.cfg.PingInterval + b.cfg.PongTimeout}
	s.framer = framer{send: s.send, limit: 2 * b.cfg.MaxFrame, m: b.m, cancel: cancel}
	ws.SetReadLimit(int64(b.cfg.MaxFrame))
	_ = ws.SetReadDeadline(time.Now().Add(s.idle))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(s.idle)) })
	flow, err := b.router.AttachAgent(user, s)
	if err != nil {
		b.log.Error("agent socket refused: no SIP flow", "user", user, "error", err)
		closeWith(ws, websocket.CloseTryAgainLater, "sip plane unavailable")
		_ = ws.Close()
		cancel(err)
		done()
		return
	}
	b.m.sockets.Inc()
	log.Info("agent socket open")
	key := sessionKey{user, session}
	var d *deadline
	if !expires.IsZero() {
		d = newDeadline(expires, cancel)
		b.track(key, d)
	}
	s.startPings()
	context.AfterFunc(ctx, func() {
		s.stopPings()
		if d != nil {
			b.untrack(key, d)
		}
		if cause := context.Cause(ctx); errors.Is(cause, ErrExpired) || errors.Is(cause, ErrSignedOut) {
			closeWith(ws, websocket.ClosePolicyViolation, cause.Error())
		}
		_ = ws.Close()   // ends the router's read of the socket
		_ = flow.Close() // and the flow, taking the agent's bindings with it now
		b.m.sockets.Dec()
		log.Info("agent socket closed", "reason", fmt.Sprint(context.Cause(ctx)))
		done()
	})
}

var errFlowEnded = errors.New("the router ended the flow")

// slowConsumer is how long a frame may wait for room in a socket's queue.
const slowConsumer = 2 * time.Second

var errSlowConsumer = errors.New("the browser reads too slowly")

// socket is an agent's WebSocket as the router's flow sees it: reads give the router the
// agent's checked messages, writes take the router's.
type socket struct {
	framer // Write
	b      *Bridge
	ws     *websocket.Conn
	user   string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc
	out    chan []byte // frames waiting for the writer
	lim    *rate.Limiter
	idle   time.Duration // no frame and no pong for this long: the browser is gone

	writing atomic.Bool // a writer goroutine is draining out

	pingMu  sync.Mutex
	pinger  *time.Timer
	stopped bool

	// Only the router's reader touches these.
	over int    // frames refused in a row by the rate limit
	rest []byte // what the last read left of a message
}

// Read gives the router the agent's next message, over as many reads as its buffer needs.
// Any end of the socket reads as io.EOF: the bridge has logged and counted the cause, and the
// router needs only to know that the flow is over.
func (s *socket) Read(p []byte) (int, error) {
	for len(s.rest) == 0 {
		msg, err := s.next()
		if err != nil {
			return 0, io.EOF
		}
		s.rest = msg
	}
	n := copy(p, s.rest)
	if s.rest = s.rest[n:]; len(s.rest) == 0 {
		s.rest = nil // an idle agent keeps no message
	}
	return n, nil
}

// Close is the router's: the flow has ended.
func (s *socket) Close() error {
	s.cancel(errFlowEnded)
	return nil
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

// next reads frames from the browser until one passes the checks and returns it. Frames that
// fail them are answered (400, 403) or dropped here.
func (s *socket) next() ([]byte, error) {
	b := s.b
	for {
		if err := s.ctx.Err(); err != nil {
			return nil, err
		}
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				b.m.refused.WithLabelValues("oversized").Inc()
				s.log.Warn("oversized frame, closing", "limit", b.cfg.MaxFrame)
			}
			s.cancel(fmt.Errorf("read: %w", err))
			return nil, err
		}
		_ = s.ws.SetReadDeadline(time.Now().Add(s.idle))
		if len(data) <= 4 && len(bytes.Trim(data, "\r\n")) == 0 {
			continue // a keepalive CRLF; anything larger counts against the rate
		}
		if !s.lim.Allow() {
			b.m.refused.WithLabelValues("rate").Inc()
			if s.over++; s.over > b.cfg.Burst {
				s.log.Warn("agent socket flooding, closing")
				closeWith(s.ws, websocket.ClosePolicyViolation, "too many messages")
				err := errors.New("flood")
				s.cancel(err)
				return nil, err
			}
			continue
		}
		s.over = 0
		msg, answer := b.check(data, s.user)
		if answer != nil {
			if err := s.send(answer); err != nil {
				return nil, err
			}
		}
		if msg != nil {
			b.m.frames.WithLabelValues("in").Inc()
			return msg, nil
		}
	}
}

// check validates one frame. It returns the message to pass on (nil: none) and an answer for
// the browser (nil: none).
func (b *Bridge) check(data []byte, user string) (msg, answer []byte) {
	data = withContentLength(data)
	// One message per frame (RFC 7118 §5.1). The router reads the agent's flow as a stream, so
	// bytes after the message's body would be read as more messages that passed none of the
	// checks below (and no rate limit): the frame is refused whole.
	if one, rest, ok := nextMessage(data); ok && len(bytes.Trim(rest, "\r\n")) > 0 {
		b.m.refused.WithLabelValues("malformed").Inc()
		return nil, sanity.Answer(one, 400, "Bad Request: One Message Per Frame")
	} else if ok {
		data = one
	}
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

// framer turns the router's stream for one agent into frames, one message each, and hands
// them to send. It runs on the goroutine of whoever in the router writes. Only a message that
// spans writes is kept between them.
type framer struct {
	send   func(frame []byte) error
	limit  int // bytes of an unfinished message past which the stream is broken
	m      *metrics
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	pending []byte
}

func (f *framer) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := p
	if len(f.pending) > 0 {
		f.pending = append(f.pending, p...)
		data = f.pending
	}
	for {
		data = bytes.TrimLeft(data, "\r\n") // keepalives between messages
		msg, rest, ok := nextMessage(data)
		if !ok {
			break
		}
		f.m.frames.WithLabelValues("out").Inc()
		if err := f.send(bytes.Clone(msg)); err != nil { // the router reuses p once Write returns
			return 0, err
		}
		data = rest
	}
	switch {
	case len(data) == 0:
		f.pending = nil
	case len(data) > f.limit:
		f.cancel(errors.New("router sent an unframed message"))
		return 0, net.ErrClosed
	default:
		f.pending = append(f.pending[:0], data...) // data may be the tail of pending: append moves it
	}
	return len(p), nil
}

// nextMessage cuts one message (head and Content-Length body) off the front of a stream. A
// message whose Content-Length is not a number this side of the stream's end, or is
// negative, is never complete: ok is false.
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
			var err error
			if n, err = strconv.Atoi(string(bytes.TrimSpace(val))); err != nil || n < 0 {
				return nil, buf, false
			}
		}
	}
	if n > len(buf)-end-4 {
		return nil, buf, false
	}
	total := end + 4 + n
	return buf[:total], buf[total:], true
}

// send queues a frame for the browser. A full queue makes the sender wait, as a TCP peer that
// reads slowly would, but only for slowConsumer: a sender may be the router's goroutine for a
// whole fork, and a browser that reads just fast enough to meet each write deadline must not
// hold it. Past that the socket is closed.
func (s *socket) send(frame []byte) error {
	select {
	case s.out <- frame:
	case <-s.ctx.Done():
		return net.ErrClosed
	default:
		wait := time.NewTimer(slowConsumer)
		defer wait.Stop()
		select {
		case s.out <- frame:
		case <-s.ctx.Done():
			return net.ErrClosed
		case <-wait.C:
			s.b.m.refused.WithLabelValues("slow").Inc()
			s.cancel(errSlowConsumer)
			return net.ErrClosed
		}
	}
	if s.writing.CompareAndSwap(false, true) {
		go s.drain()
	}
	return nil
}

// drain writes queued frames until none is left. Only one runs at a time (writing).
func (s *socket) drain() {
	for {
		select {
		case frame := <-s.out:
			_ = s.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := s.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
				s.cancel(fmt.Errorf("write: %w", err))
				return // writing stays set: nothing is written to a broken socket again
			}
		default:
			s.writing.Store(false)
			// A frame queued after the empty queue was seen but before writing was
			// cleared found a writer running and started none: take it.
			if len(s.out) == 0 || !s.writing.CompareAndSwap(false, true) {
				return
			}
		}
	}
}

// Pings keep the browser's NAT and proxies open and prove the browser alive (its pongs move
// the read deadline). gorilla lets control frames be written beside a data frame.
func (s *socket) startPings() {
	s.pingMu.Lock()
	defer s.pingMu.Unlock()
	s.pinger = time.AfterFunc(s.b.cfg.PingInterval, s.ping)
}

func (s *socket) ping() {
	if err := s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
		s.cancel(fmt.Errorf("ping: %w", err))
		return
	}
	s.pingMu.Lock()
	defer s.pingMu.Unlock()
	if !s.stopped {
		s.pinger.Reset(s.b.cfg.PingInterval)
	}
}

func (s *socket) stopPings() {
	s.pingMu.Lock()
	defer s.pingMu.Unlock()
	s.stopped = true
	s.pinger.Stop()
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
			Help: "Frames refused, by reason (malformed, identity, rate, oversized; slow: a frame to a browser that did not read)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.sockets, m.frames, m.refused)
	}
	return m
}
