package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/net/http/httpguts"
)

// The static fast lane answers plain-HTTP/1.1 GET and HEAD requests for the embedded admin
// portal and the portals' common files at the connection level, before net/http sees the
// connection.
//
// Every accepted plain-HTTP connection first goes to a small loop that reads requests with a
// strict parser (parseFastHead). A request it fully understands and that names an embedded
// file staticFastPath would serve (origin-form target, HTTP/1.1, exactly one valid Host, no
// body framing headers, no Expect or Upgrade, CRLF line ends, no obs-fold, a head that fits in
// min(4 KiB, max_header_bytes)) is answered from the response prepared at start: the same
// bytes net/http would send for it (the headers come from the same handler, serialised the way
// net/http does, see newFastAsset), with the same per-IP rate limit, access log line and
// metrics. Anything else, or anything ambiguous, hands the connection to the http.Server with
// the bytes read so far replayed, for good: from then on net/http answers every request on it,
// including the one that made the lane give up. Timeouts are net/http's, applied as its
// conn.serve does: idle between requests, then one header deadline per request that reads do
// not move and a handover does not restart (see serve).
//
// Only plain HTTP: under TLS the connection may negotiate HTTP/2 (ALPN) and the lane would have
// to sit above crypto/tls; that stays net/http's. Connections from trusted proxies go straight
// to net/http (the client address comes from X-Forwarded-For there).
//
// It is a listener: Accept returns the connections handed over. Closing it closes the real
// listener and the lane's idle connections; shutdown waits for the busy ones.
type fastLane struct {
	inner  net.Listener
	s      *Server
	assets map[string]*fastAsset // by URL path: the paths staticFastPath takes

	maxHead              int
	idle, header, writeD time.Duration

	handoff chan net.Conn
	errs    chan error
	done    chan struct{}
	once    sync.Once
	closing atomic.Bool

	mu    sync.Mutex
	conns map[*fastConn]struct{}
	wg    sync.WaitGroup

	handovers atomic.Uint64 // connections given to net/http (for tests)
}

// fastHeadMax caps the request head the lane reads; longer heads go to net/http, which has the
// configured limit.
const fastHeadMax = 4 << 10

var fastBufs = sync.Pool{New: func() any { b := make([]byte, fastHeadMax); return &b }}

// newFastLane wraps ln with the fast lane for the given paths (each with its route, see
// staticPaths), or returns nil when there is nothing to serve.
func (s *Server) newFastLane(ln net.Listener, paths map[string]string) (*fastLane, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	l := &fastLane{inner: ln, s: s, assets: map[string]*fastAsset{},
		maxHead: min(fastHeadMax, s.cfg.MaxHeaderBytes),
		handoff: make(chan net.Conn), errs: make(chan error), done: make(chan struct{}),
		conns: map[*fastConn]struct{}{}}
	if l.maxHead <= 0 {
		l.maxHead = fastHeadMax
	}
	// The same timeouts as http.Server applies (see http.Server.idleTimeout and
	// readHeaderTimeout: each falls back to ReadTimeout).
	t := s.cfg.Timeouts
	l.idle, l.header, l.writeD = t.Idle, t.ReadHeader, t.Write
	if l.idle == 0 {
		l.idle = t.Read
	}
	if l.header == 0 {
		l.header = t.Read
	}
	h := s.securityHeaders(s.static)
	for p, route := range paths {
		a, err := newFastAsset(h, p)
		if err != nil {
			return nil, err
		}
		a.route = route
		l.assets[p] = a
	}
	go l.acceptLoop()
	return l, nil
}

// staticPaths is the embedded files that chi itself routes to one of fastRoutes for GET and
// HEAD, each with that route: what staticFastPath and the fast lane may answer without chi,
// and the route their log lines and metrics name.
func (s *Server) staticPaths(mux *chi.Mux) map[string]string {
	paths := map[string]string{}
	for p := range s.static.assets {
		route := mux.Find(chi.NewRouteContext(), http.MethodGet, p)
		if slices.Contains(fastRoutes, route) && mux.Find(chi.NewRouteContext(), http.MethodHead, p) == route {
			paths[p] = route
		}
	}
	return paths
}

// ---------------------------------------------------------------- the prepared responses

// fastAsset is every response the lane sends for one file: 200 to GET and to HEAD, plain and
// gzip, and 304 for each encoding (each has its own ETag). 304 does not depend on the method.
type fastAsset struct {
	route       string           // for the metrics, as chi names it (staticPaths)
	etag        [2][]byte        // [0] plain, [1] gzip
	get, head   [2]*fastResponse // [0] plain, [1] gzip
	notModified [2]*fastResponse
}

// fastResponse is one response without its Date line: the status line and the handler's
// headers as net/http writes them (sorted, 304's suppressed ones left out), and the body.
// The full bytes are rebuilt once per second with the Date.
type fastResponse struct {
	status int
	head   []byte
	body   []byte
	dated  atomic.Pointer[datedResponse]
}

type datedResponse struct {
	sec int64
	b   []byte
}

// newFastAsset runs the static handler (with the security headers, the only middleware that
// sets response headers) once per variant and keeps what it wrote.
func newFastAsset(h http.Handler, p string) (*fastAsset, error) {
	run := func(method string, gzip bool, etag string) (*fastResponse, error) {
		r, err := http.NewRequest(method, p, nil)
		if err != nil {
			return nil, err
		}
		if gzip {
			r.Header["Accept-Encoding"] = []string{"gzip"}
		}
		if etag != "" {
			r.Header["If-None-Match"] = []string{etag}
		}
		rec := &fastRecorder{h: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status != http.StatusOK && rec.status != http.StatusNotModified {
			return nil, fmt.Errorf("static fast lane: %s %s answered %d", method, p, rec.status)
		}
		hdr := rec.h.Clone()
		if rec.status == http.StatusNotModified {
			// net/http drops these from a 304 (suppressedHeaders).
			for _, k := range []string{"Content-Type", "Content-Length", "Transfer-Encoding"} {
				delete(hdr, k)
			}
		}
		if hdr.Get("Content-Length") == "" && rec.status == http.StatusOK {
			return nil, fmt.Errorf("static fast lane: %s %s has no Content-Length", method, p)
		}
		var head bytes.Buffer
		fmt.Fprintf(&head, "HTTP/1.1 %03d %s\r\n", rec.status, http.StatusText(rec.status))
		if err := hdr.Write(&head); err != nil { // sorted by key, as net/http's WriteSubset
			return nil, err
		}
		body := rec.body.Bytes()
		if method == http.MethodHead || rec.status != http.StatusOK {
			body = nil
		}
		return &fastResponse{status: rec.status, head: head.Bytes(), body: body}, nil
	}
	a := &fastAsset{}
	var err error
	for i, gz := range []bool{false, true} {
		if a.get[i], err = run(http.MethodGet, gz, ""); err != nil {
			return nil, err
		}
		if a.head[i], err = run(http.MethodHead, gz, ""); err != nil {
			return nil, err
		}
	}
	for i, gz := range []bool{false, true} {
		etag := a.get[i].etag()
		if etag == "" {
			return nil, fmt.Errorf("static fast lane: %s has no ETag", p)
		}
		a.etag[i] = []byte(etag)
		if a.notModified[i], err = run(http.MethodGet, gz, etag); err != nil {
			return nil, err
		}
		if a.notModified[i].status != http.StatusNotModified {
			return nil, fmt.Errorf("static fast lane: %s: If-None-Match got %d", p, a.notModified[i].status)
		}
	}
	return a, nil
}

func (r *fastResponse) etag() string {
	for _, line := range bytes.Split(r.head, []byte("\r\n")) {
		if k, v, ok := bytes.Cut(line, []byte(": ")); ok && string(k) == "Etag" {
			return string(v)
		}
	}
	return ""
}

// bytes is the whole response with now's Date. closing adds "Connection: close", as net/http
// does while shutting down (it goes before Date: net/http's extraHeader order).
func (r *fastResponse) bytes(now time.Time, closing bool) []byte {
	sec := now.Unix()
	if d := r.dated.Load(); d != nil && d.sec == sec && !closing {
		return d.b
	}
	b := make([]byte, 0, len(r.head)+64+len(r.body))
	b = append(b, r.head...)
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "Date: "...)
	b = now.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n\r\n"...)
	b = append(b, r.body...)
	if !closing {
		r.dated.Store(&datedResponse{sec: sec, b: b})
	}
	return b
}

// fastRecorder is a ResponseWriter that keeps the status, headers and body.
type fastRecorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *fastRecorder) Header() http.Header { return w.h }
func (w *fastRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *fastRecorder) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// ---------------------------------------------------------------- the listener

func (l *fastLane) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			// net/http decides: it retries temporary errors and stops on the others.
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		fc := &fastConn{Conn: c}
		l.mu.Lock()
		if l.closing.Load() {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.conns[fc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.serve(fc)
	}
}

// Accept returns the connections the lane hands over to net/http.
func (l *fastLane) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the lane's idle connections (http.Server.Shutdown calls it).
func (l *fastLane) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		l.mu.Lock()
		l.closing.Store(true)
		close(l.done)
		for c := range l.conns {
			if c.idle.Load() {
				_ = c.Conn.Close()
			}
		}
		l.mu.Unlock()
		err = l.inner.Close()
	})
	return err
}

func (l *fastLane) Addr() net.Addr { return l.inner.Addr() }

// shutdown closes the lane and waits for its busy connections to finish their response; when
// ctx ends first, it closes them all.
func (l *fastLane) shutdown(ctx context.Context) error {
	_ = l.Close()
	finished := make(chan struct{})
	go func() { l.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		for c := range l.conns {
			_ = c.Conn.Close()
		}
		l.mu.Unlock()
		<-finished
		return fmt.Errorf("http fast lane shutdown: %w", ctx.Err())
	}
}

// fastConn is a connection while the lane owns it.
type fastConn struct {
	net.Conn
	idle atomic.Bool // waiting for the next request to start: Close may drop it
}

func (l *fastLane) forget(c *fastConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.wg.Done()
}

// handOver gives the connection to net/http with pending replayed. pending is the start of a
// request (and maybe more) whose head must be read by deadline (zero: no limit): net/http's
// header timeout for it is not started again. When net/http no longer takes connections
// (shutting down), it closes the connection instead.
func (l *fastLane) handOver(c net.Conn, pending []byte, deadline time.Time) {
	if len(pending) > 0 {
		c = &replayConn{Conn: c, pending: bytes.Clone(pending), headDeadline: deadline}
	}
	l.handovers.Add(1)
	select {
	case l.handoff <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// serve is the lane's loop for one connection.
func (l *fastLane) serve(fc *fastConn) {
	defer l.forget(fc)
	c := fc.Conn
	ip := remoteAddr(c.RemoteAddr().String())
	if l.s.ips.isTrusted(ip) {
		l.handOver(c, nil, time.Time{})
		return
	}
	class := l.s.ips.class(ip) // the same class net/http's chain gives this peer's requests
	bp := fastBufs.Get().(*[]byte)
	buf := (*bp)[:l.maxHead]
	defer fastBufs.Put(bp)
	defer func() {
		if v := recover(); v != nil {
			l.s.log.Error("http fast lane panic", "panic", fmt.Sprint(v), "remote", ip.String())
			_ = c.Close()
		}
	}()
	n := 0 // bytes of buf holding unanswered input
	// Deadlines and request starts are net/http's (conn.serve). A new connection's first
	// request starts at accept. On a kept-alive connection net/http waits under the idle
	// timeout until it can peek 4 bytes, then starts the next request (pipelined bytes
	// already read count): a client that sends fewer and stops is closed without an answer,
	// not answered 400. A request's header deadline is set once when it starts and not moved
	// by the reads that follow, so a client cannot keep a head open by sending it a byte at a
	// time; a request handed over keeps it (replayConn).
	var (
		started     bool      // a request is under way: its header deadline applies, not idle's
		reqDeadline time.Time // its header deadline; zero when there is no header timeout
	)
	startRequest := func() {
		started, reqDeadline = true, time.Time{}
		if l.header > 0 {
			reqDeadline = time.Now().Add(l.header)
		}
		_ = c.SetReadDeadline(reqDeadline)
	}
	startRequest()
	for {
		// Answer every complete request in buf, in order.
		for started && n > 0 {
			h, used, st := parseFastHead(buf[:n])
			if st == fastNeedMore {
				break
			}
			var a *fastAsset
			if st == fastOK {
				a = l.assets[string(h.path)]
			}
			if a == nil {
				l.handOver(c, buf[:n], reqDeadline)
				return
			}
			now := time.Now()
			if l.s.limitAll != nil {
				if ok, _ := l.s.limitAll.allow(ip, class, now); !ok {
					l.handOver(c, buf[:n], reqDeadline) // net/http's chain answers the 429 and counts it
					return
				}
			}
			if !l.answer(c, ip, a, &h, now) {
				return
			}
			n = copy(buf, buf[used:n])
			started = false
			if n >= 4 { // pipelined: the next request starts now, after the answer
				startRequest()
			} else {
				var d time.Time
				if l.idle > 0 {
					d = time.Now().Add(l.idle)
				}
				_ = c.SetReadDeadline(d)
			}
		}
		if n == len(buf) { // a head longer than the lane reads: net/http applies the real limit
			l.handOver(c, buf[:n], reqDeadline)
			return
		}
		if n == 0 || !started {
			fc.idle.Store(true) // between requests: Close may drop it
			if l.closing.Load() {
				_ = c.Close()
				return
			}
		}
		m, err := c.Read(buf[n:])
		fc.idle.Store(false)
		n += m
		if !started && n >= 4 { // the next request's first bytes
			startRequest()
		}
		if err != nil {
			// Like net/http: read errors close quietly, except a started request cut by EOF,
			// which net/http answers (400 for a truncated head): let it.
			if err == io.EOF && started && n > 0 {
				l.handOver(c, buf[:n], reqDeadline)
				return
			}
			_ = c.Close()
			return
		}
	}
}

// answer sends one prepared response and logs it. It reports whether the connection stays with
// the lane (false: it was closed).
func (l *fastLane) answer(c net.Conn, ip netip.Addr, a *fastAsset, h *fastHead, start time.Time) bool {
	s := l.s
	var seq uint64 // as withRequestInfo: the client's X-Request-Id, else the next number
	if len(h.reqID) == 0 {
		seq = reqIDSeq.Add(1)
	}
	gz := 0
	if h.gzip {
		gz = 1
	}
	r := a.get[gz]
	if h.head {
		r = a.head[gz]
	}
	if h.hasINM && bytes.Contains(h.inm, a.etag[gz]) {
		r = a.notModified[gz]
	}
	closing := l.closing.Load()
	if l.writeD > 0 {
		_ = c.SetWriteDeadline(start.Add(l.writeD))
	}
	_, err := c.Write(r.bytes(start, closing))
	took := time.Since(start)
	s.m.observe(a.route, r.status, took)
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		method := http.MethodGet
		if h.head {
			method = http.MethodHead
		}
		info := reqInfo{ip: ip, id: string(h.reqID), seq: seq}
		s.log.LogAttrs(context.Background(), slog.LevelInfo, "http request",
			slog.String("request_id", RequestID(&reqCtx{Context: context.Background(), info: info})),
			slog.String("method", method), slog.String("path", string(h.path)), slog.Int("status", r.status),
			slog.Int("bytes", len(r.body)), slog.Int64("duration_ms", took.Milliseconds()),
			slog.String("remote", ip.String()))
	}
	if err != nil || closing {
		_ = c.Close()
		return false
	}
	return true
}

// replayConn is a connection handed over to net/http: what the lane had read comes first.
type replayConn struct {
	net.Conn
	pending []byte
	// headDeadline is the lane's header deadline for the request in pending. net/http's first
	// SetReadDeadline on a connection is its header timeout for the first request (conn.serve);
	// it is kept to headDeadline, so handing over does not give a slow client a second timeout.
	// Later calls (the body's ReadTimeout, idle, the next requests) pass as they are.
	headDeadline time.Time
	deadlineSet  atomic.Bool // a hijacked connection may be given deadlines from any goroutine
}

func (c *replayConn) SetReadDeadline(t time.Time) error {
	if c.deadlineSet.CompareAndSwap(false, true) {
		if !c.headDeadline.IsZero() && (t.IsZero() || t.After(c.headDeadline)) {
			t = c.headDeadline
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline's rule for the read half (net/http does not call it).
func (c *replayConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when the one below can (net/http uses it).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ---------------------------------------------------------------- the parser

type fastState int

const (
	fastNeedMore fastState = iota // a prefix of a request the lane may serve: read more
	fastOK                        // a complete request the lane may serve
	fastFallback                  // anything else: net/http's
)

// fastHead is what the lane needs from a request head. Slices point into the input.
type fastHead struct {
	head  bool // HEAD, else GET
	path  []byte
	gzip  bool   // Accept-Encoding lists gzip (acceptsGzip)
	inm   []byte // If-None-Match
	reqID []byte // X-Request-Id

	hasAE, hasINM, hasReqID bool
}

// parseFastHead parses one request head at the start of b. It is strict: a request is fastOK
// only when net/http would read it the same way and it can have no body; anything it does not
// fully understand is fastFallback. fastOK also returns the head's length.
func parseFastHead(b []byte) (h fastHead, n int, st fastState) {
	// Request line: GET|HEAD SP origin-form SP HTTP/1.1 CRLF.
	var rest []byte
	switch {
	case bytes.HasPrefix(b, []byte("GET ")):
		rest = b[4:]
	case bytes.HasPrefix(b, []byte("HEAD ")):
		rest, h.head = b[5:], true
	case bytes.HasPrefix([]byte("GET "), b), bytes.HasPrefix([]byte("HEAD "), b):
		return h, 0, fastNeedMore
	default:
		return h, 0, fastFallback
	}
	eol := bytes.IndexByte(rest, '\n')
	if eol < 0 {
		return h, 0, fastNeedMore
	}
	line, ok := bytes.CutSuffix(rest[:eol], []byte(" HTTP/1.1\r"))
	if !ok || len(line) == 0 || line[0] != '/' {
		return h, 0, fastFallback
	}
	for _, c := range line {
		if c <= ' ' || c >= 0x7f {
			return h, 0, fastFallback
		}
	}
	h.path, _, _ = bytes.Cut(line, []byte("?"))
	for _, c := range h.path {
		// Only bytes url.URL leaves as they are: the path is then net/http's URL.Path, with
		// RawPath empty (chi routes on RawPath when set).
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
			return h, 0, fastFallback
		}
	}
	pos := len(b) - len(rest) + eol + 1

	// Header lines: token ":" OWS value OWS CRLF, then CRLF.
	hosts, conns := 0, 0
	for {
		eol := bytes.IndexByte(b[pos:], '\n')
		if eol < 0 {
			return h, 0, fastNeedMore
		}
		line := b[pos : pos+eol]
		pos += eol + 1
		if len(line) == 0 || line[len(line)-1] != '\r' { // bare LF
			return h, 0, fastFallback
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return h, 0, fastFallback // no name, no colon, or obs-fold / leading space
		}
		name := line[:colon]
		for _, c := range name {
			if !httpguts.IsTokenRune(rune(c)) { // includes a space before the colon
				return h, 0, fastFallback
			}
		}
		value := line[colon+1:]
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return h, 0, fastFallback
			}
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			if hosts++; hosts > 1 || !httpguts.ValidHostHeader(string(value)) {
				return h, 0, fastFallback
			}
		case bytes.EqualFold(name, []byte("Accept-Encoding")):
			if h.hasAE {
				return h, 0, fastFallback
			}
			h.hasAE, h.gzip = true, acceptsGzipValue(string(value))
		case bytes.EqualFold(name, []byte("If-None-Match")):
			if h.hasINM {
				return h, 0, fastFallback
			}
			h.hasINM, h.inm = true, value
		case bytes.EqualFold(name, []byte("X-Request-Id")):
			if h.hasReqID {
				return h, 0, fastFallback
			}
			h.hasReqID, h.reqID = true, value
		case bytes.EqualFold(name, []byte("Connection")):
			if conns++; conns > 1 || !bytes.EqualFold(value, []byte("keep-alive")) {
				return h, 0, fastFallback
			}
		case bytes.EqualFold(name, []byte("Content-Length")), bytes.EqualFold(name, []byte("Transfer-Encoding")),
			bytes.EqualFold(name, []byte("Expect")), bytes.EqualFold(name, []byte("Upgrade")),
			bytes.EqualFold(name, []byte("Trailer")), bytes.EqualFold(name, []byte("Http2-Settings")):
			return h, 0, fastFallback
		}
	}
	if hosts != 1 {
		return h, 0, fastFallback
	}
	return h, pos, fastOK
}
