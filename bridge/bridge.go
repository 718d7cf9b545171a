// Package bridge carries SIP over WebSocket (RFC 7118) between browser agents and the SIP
// router. The HTTP plane authenticates the upgrade (JWT, Origin, subprotocol "sip") and hands
// the socket here with the user its token names; from then on the socket belongs to the bridge:
// one reader and one writer goroutine, ping/pong with a dead-peer timeout, a read limit, a
// per-socket message rate, and one SIP message per frame each way.
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
}

// New builds a bridge in front of router.
func New(cfg Config, router Router, log *slog.Logger, reg prometheus.Registerer) *Bridge {
	return &Bridge{cfg: cfg.withDefaults(), router: router, log: log, m: newMetrics(reg)}
}

// ErrExpired closes a socket whose token ran out.
var ErrExpired = errors.New("token expired")

// Serve runs one agent socket until it closes, the token expires (expires, zero: never) or ctx
// ends. It always closes ws.
func (b *Bridge) Serve(ctx context.Context, ws *websocket.Conn, user string, expires time.Time) {
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
		t := time.AfterFunc(time.Until(expires), func() { cancel(ErrExpired) })
		defer t.Stop()
	}
	<-ctx.Done()
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrExpired) {
		closeWith(ws, websocket.ClosePolicyViolation, "token expired")
	}
	_ = flow.Close()
	_ = ws.Close()
	wg.Wait()
	log.Info("agent socket closed", "reason", fmt.Sprint(cause))
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

// fromRouter splits the router's stream into SIP messages, one frame each.
func (b *Bridge) fromRouter(ctx context.Context, flow net.Conn, out chan<- []byte, cancel context.CancelCauseFunc) {
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 32<<10)
	for {
		n, err := flow.Read(chunk)
		if err != nil {
			cancel(fmt.Errorf("router closed the flow: %w", err))
			return
		}
		buf = append(buf, chunk[:n]...)
		for {
			msg, rest, ok := nextMessage(buf)
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
			buf = append(buf[:0], rest...)
		}
		if len(buf) > 2*b.cfg.MaxFrame {
			cancel(errors.New("router sent an unframed message"))
			return
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
