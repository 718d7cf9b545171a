package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dualgate/dualgate/internal/tlsadmit/tlsadmittest"
	"github.com/dualgate/dualgate/static"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

type countingListener struct {
	net.Listener
	conns chan *countingConn
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c}
	l.conns <- cc
	return cc, nil
}

// TestStaticResponseInOneWrite: a static file larger than net/http's 4 KiB write buffer
// leaves in one write to the socket, headers and body together, over HTTP and HTTPS; other
// responses are written as before and come out whole.
func TestStaticResponseInOneWrite(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "http", true: "https"}[useTLS]
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := Defaults()
			cfg.JWT = testJWTConfig(t)
			s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, slog.New(slog.DiscardHandler), reg)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			conns := make(chan *countingConn, 1)
			var ln net.Listener = batchListener{countingListener{raw, conns}}
			srv := &http.Server{Handler: s.Handler(), ConnContext: withBatchConn}
			var dial func() (net.Conn, error)
			if useTLS {
				cert, _ := tlsadmittest.Cert(t)
				tcfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
				ln = tls.NewListener(ln, tcfg)
				dial = func() (net.Conn, error) {
					return tls.Dial("tcp", raw.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				}
			} else {
				dial = func() (net.Conn, error) { return net.Dial("tcp", raw.Addr().String()) }
			}
			go srv.Serve(ln)
			defer srv.Close()

			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			var cc *countingConn
			for i, tc := range []struct {
				req   string
				whole bool // expect one write
			}{
				{"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", true},
				{"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
				{"GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\n", true},
				{"GET /admin/favicon.svg HTTP/1.1\r\nHost: x\r\n\r\n", true}, // small: one write without batching
				{"GET /admin/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
				{"HEAD /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", true},
				{"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", true},
				{"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", true},
			} {
				if _, err := io.WriteString(c, tc.req); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				res, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tc.req)[0]})
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("%q: %d %v", tc.req, res.StatusCode, err)
				}
				if !strings.HasPrefix(tc.req, "HEAD") && int64(len(body)) != res.ContentLength {
					t.Errorf("%q: %d bytes, Content-Length %d", tc.req, len(body), res.ContentLength)
				}
				if cc == nil {
					cc = <-conns
				}
				if useTLS && i == 0 {
					cc.take() // the handshake
					continue
				}
				// The request is answered before ReadResponse returns, so its writes are all in.
				if w := cc.take(); tc.whole && len(w) != 1 {
					t.Errorf("%q: %d writes %v, want 1", tc.req, len(w), w)
				}
			}
		})
	}
}

type scriptConn struct {
	net.Conn
	writes [][]byte
	fail   error
}

func (c *scriptConn) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestBatchConn(t *testing.T) {
	sc := &scriptConn{}
	c := &batchConn{Conn: sc}
	c.Write([]byte("a"))
	c.hold()
	c.Write([]byte("b"))
	c.Write([]byte("c"))
	if len(sc.writes) != 1 {
		t.Fatalf("held writes reached the socket: %q", sc.writes)
	}
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("d"))
	if got := bytes.Join(sc.writes, []byte("|")); string(got) != "a|bc|d" {
		t.Errorf("writes %q, want a|bc|d", got)
	}
	if err := c.release(); err != nil { // not held: nothing to do
		t.Error(err)
	}
	// A failed batched send fails every later write: net/http must not go on as if it left.
	sc.fail = errors.New("broken pipe")
	c.hold()
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	if err := c.release(); err == nil {
		t.Error("release hid the failed send")
	}
	sc.fail = nil
	if _, err := c.Write([]byte("f")); err == nil {
		t.Error("write after a failed batch succeeded")
	}
}

// acceptsGzipSplit is the original Accept-Encoding check; acceptsGzip must agree with it.
func acceptsGzipSplit(v string) bool {
	for _, part := range strings.Split(v, ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

func TestAcceptsGzip(t *testing.T) {
	for _, v := range []string{"", "gzip", "GZIP", " gzip ", "gzip;q=0", "gzip; q=0", "gzip ; q=0 ", "gzip;q=0.0",
		"gzip;q=1", "x-gzip", "deflate, gzip", "deflate,gzip;q=0", "br;q=1, gzip;q=0.5", ",", ",,gzip,", "*",
		"identity", "gzip,", ",gzip", "gzipx", "gzip;", "deflate;q=0,br"} {
		r := &http.Request{Header: http.Header{}}
		if v != "" {
			r.Header.Set("Accept-Encoding", v)
		}
		if got, want := acceptsGzip(r), acceptsGzipSplit(v); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", v, got, want)
		}
	}
	// Only the first header line counts, as with Header.Get.
	r := &http.Request{Header: http.Header{"Accept-Encoding": {"br", "gzip"}}}
	if acceptsGzip(r) {
		t.Error("a second Accept-Encoding line was read")
	}
}

func FuzzAcceptsGzip(f *testing.F) {
	f.Add("br, gzip;q=0.5")
	f.Fuzz(func(t *testing.T, v string) {
		r := &http.Request{Header: http.Header{"Accept-Encoding": {v}}}
		if acceptsGzip(r) != acceptsGzipSplit(v) {
			t.Errorf("%q", v)
		}
	})
}

// TestAccessLogAndMetrics: one JSON line per request at info level, with the request ID (the
// client's or a generated one) and the client address; none at warn; metrics either way.
func TestAccessLogAndMetrics(t *testing.T) {
	var buf syncBuffer
	level := new(slog.LevelVar)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.JWT = testJWTConfig(t)
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Metrics: reg}, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	base := "http://" + s.Addr().String()
	c := clientFrom("127.0.0.1")
	get(t, c, base+"/healthz", map[string]string{"X-Request-Id": "client-chosen-1"})
	get(t, c, base+"/healthz", nil)
	level.Set(slog.LevelWarn)
	get(t, c, base+"/healthz", nil)

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if m["msg"] == "http request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2 (none at warn): %s", len(lines), buf.String())
	}
	want := map[string]any{"level": "INFO", "method": "GET", "path": "/healthz", "status": 200.0, "bytes": 19.0, "remote": "127.0.0.1"}
	for _, l := range lines {
		for k, v := range want {
			if l[k] != v {
				t.Errorf("%s = %v, want %v (%v)", k, l[k], v, l)
			}
		}
		if _, ok := l["duration_ms"].(float64); !ok {
			t.Errorf("no duration_ms: %v", l)
		}
	}
	if id := lines[0]["request_id"]; id != "client-chosen-1" {
		t.Errorf("request_id %v, want the client's", id)
	}
	if id, _ := lines[1]["request_id"].(string); !regexp.MustCompile(`^[^/]+/[A-Za-z0-9]{10}-\d{6,}$`).MatchString(id) {
		t.Errorf("generated request_id %q", id)
	}
	if n := testutil.ToFloat64(s.m.requests.WithLabelValues("/healthz", "200")); n != 3 {
		t.Errorf("requests_total{route=/healthz,code=200} = %v, want 3", n)
	}
	if n := testutil.CollectAndCount(s.m.duration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRequestIDFormat(t *testing.T) {
	r := httpRequestWithInfo(&reqInfo{seq: 7})
	if id := RequestID(r.Context()); !strings.HasSuffix(id, "-000007") || !strings.HasPrefix(id, reqIDPrefix) {
		t.Errorf("%q", id)
	}
	r = httpRequestWithInfo(&reqInfo{seq: 12345678})
	if id := RequestID(r.Context()); !strings.HasSuffix(id, "-12345678") {
		t.Errorf("%q", id)
	}
	if id := RequestID(context.Background()); id != "" {
		t.Errorf("outside the chain: %q", id)
	}
}

func httpRequestWithInfo(i *reqInfo) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	return r.WithContext(&reqCtx{Context: r.Context(), info: *i})
}

// TestStaticFastPath: the requests the fast path takes get exactly what chi would give them,
// under the same route label; the others still go through chi.
func TestStaticFastPath(t *testing.T) {
	newServer := func() *Server {
		cfg := Defaults()
		cfg.JWT = testJWTConfig(t)
		reg := prometheus.NewRegistry()
		s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, slog.New(slog.DiscardHandler), reg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fast, slow := newServer(), newServer()
	fh, sh := fast.Handler(), slow.router()
	etag := fast.static.assets["/admin/admin.js"].plain.etag[0]
	for _, tc := range []struct {
		method, target string
		hdr            map[string]string
	}{
		{"GET", "/admin/admin.js", nil},
		{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "gzip"}},
		{"GET", "/admin/admin.js", map[string]string{"If-None-Match": etag}},
		{"HEAD", "/admin/admin.js", nil},
		{"GET", "/admin/", nil},
		{"GET", "/admin/favicon.svg", nil},
		{"GET", "/common/common.js", map[string]string{"Accept-Encoding": "gzip"}},
		{"HEAD", "/common/common.css", nil},
		{"GET", "/common/", nil},
		{"GET", "/agent/agent.js", nil},
		{"GET", "/admin/%61dmin.js", nil}, // RawPath set: chi's way
		{"GET", "/admin/missing.js", nil},
		{"POST", "/admin/admin.js", nil},
		{"PROPFIND", "/admin/admin.js", nil},
		{"GET", "/admin", nil},
		{"GET", "/healthz", nil},
		{"GET", "/nope", nil},
	} {
		var recs [2]*httptest.ResponseRecorder
		for i, h := range []http.Handler{fh, sh} {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			recs[i] = httptest.NewRecorder()
			h.ServeHTTP(recs[i], req)
		}
		a, b := recs[0], recs[1]
		if a.Code != b.Code || !reflect.DeepEqual(a.Header(), b.Header()) || !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) {
			t.Errorf("%s %s: fast path %d %v, chi %d %v", tc.method, tc.target, a.Code, a.Header(), b.Code, b.Header())
		}
	}
	for _, route := range []string{staticRoute, commonRoute, agentRoute} {
		for _, code := range []string{"200", "304", "404"} {
			if a, b := testutil.ToFloat64(fast.m.requests.WithLabelValues(route, code)),
				testutil.ToFloat64(slow.m.requests.WithLabelValues(route, code)); a != b {
				t.Errorf("requests_total{route=%s,code=%s}: fast path %v, chi %v", route, code, a, b)
			}
		}
	}
	if n := testutil.ToFloat64(fast.m.requests.WithLabelValues(commonRoute, "200")); n != 2 {
		t.Errorf("requests_total{route=/common/*,code=200} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(fast.m.requests.WithLabelValues(staticRoute, "200")); n < 5 {
		t.Errorf("requests_total{route=/admin/*,code=200} = %v", n)
	}
}
