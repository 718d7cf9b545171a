package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dualgate/dualgate/static"
)

// laneServer is the HTTP plane started as in production (plain HTTP: the fast lane is on).
func laneServer(t *testing.T, cfg Config, log *slog.Logger) *Server {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	if s.fast == nil {
		t.Fatal("no fast lane")
	}
	return s
}

// refServer is the same plane served by net/http alone: what the HTTP plane did before the
// fast lane (Start without it), the reference the lane must match.
func refServer(t *testing.T, cfg Config, log *slog.Logger) (*Server, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newConnLimitListener(raw, s.ips, true, func(class string) { s.m.limited.WithLabelValues("connections", class).Inc() })
	tm := cfg.Timeouts
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: tm.ReadHeader, ReadTimeout: tm.Read,
		WriteTimeout: tm.Write, IdleTimeout: tm.Idle, MaxHeaderBytes: cfg.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug), ConnContext: withBatchConn}
	go func() { _ = srv.Serve(batchListener{ln}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s, raw.Addr().String()
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r\n]*\r$`)

// exchange sends input on a fresh connection, half-closes it and returns everything the server
// sends until it closes, with the Date lines blanked.
func exchange(t *testing.T, addr, input string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, input) // the server may close before reading it all
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("read: %v", err)
	}
	return dateLine.ReplaceAllString(string(out), "Date: (date)\r")
}

// TestFastLaneMatchesNetHTTP: for every request below, the fast lane's answer on the wire is
// byte for byte net/http's (apart from Date), and the lane keeps or hands over the connection
// as listed.
func TestFastLaneMatchesNetHTTP(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.RateLimit.PerIP, cfg.RateLimit.MaxConnsPerIP = 0, 0
	lane := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	ref, refAddr := refServer(t, cfg, slog.New(slog.DiscardHandler))
	etag := lane.static.assets["/admin/admin.js"].plain.etag[0]
	gzTag := lane.static.assets["/admin/admin.js"].gz.etag[0]

	const (
		get  = "GET /admin/admin.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
		gzip = "GET /admin/admin.js HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n"
	)
	// net/http allows a head of max_header_bytes + 4 KiB, counted from where its buffered reader
	// stands, so a pipelined head near the limit may pass or not depending on what was buffered
	// with the request before it. Well above it (32 KiB) and well below (18 KiB) do not depend on
	// that: those are compared.
	big := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 32<<10) + "\r\n\r\n"
	large := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 18<<10) + "\r\n\r\n"
	for _, tc := range []struct {
		name  string
		input string
		fast  bool // answered by the lane to the end, never handed over
	}{
		{"get", get, true},
		{"gzip", gzip, true},
		{"gzip q=0", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=0\r\n\r\n", true},
		{"head", "HEAD /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"head gzip", "HEAD /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
		{"304", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n", true},
		{"gzip request, plain etag in a list: 200", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: \"zz\", " + etag + "\r\n\r\n", true},
		{"304 head", "HEAD /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n", true},
		{"304 gzip etag", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: " + gzTag + "\r\n\r\n", true},
		{"gzip etag, plain request", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + gzTag + "\r\n\r\n", true},
		{"etag mismatch", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"nope\"\r\n\r\n", true},
		{"empty if-none-match", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match:\r\n\r\n", true},
		{"index", "GET /admin/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
		{"index.html", "GET /admin/index.html HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"css", "GET /admin/admin.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
		{"favicon", "GET /admin/favicon.svg HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
		{"query", "GET /admin/admin.js?v=3&x=%20y HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"header case and spaces", "GET /admin/admin.js HTTP/1.1\r\nhost:   x  \r\naccept-ENCODING:\tgzip \r\nuser-agent: t\r\nCookie: a=b\r\n\r\n", true},
		{"keep-alive", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n", true},
		{"request id", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-1\r\n\r\n", true},
		{"empty host", "GET /admin/admin.js HTTP/1.1\r\nHost:\r\n\r\n", true},
		{"obs-text value", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Note: caf\xe9\r\n\r\n", true},
		{"pipelined", get + gzip + "HEAD /admin/ HTTP/1.1\r\nHost: x\r\n\r\n" + get, true},
		{"common js", "GET /common/common.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", true},
		{"common css", "GET /common/common.css HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"pipelined admin and common", get + "HEAD /common/common.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" + get, true},

		{"pipelined then api", get + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + get, false},
		{"pipelined then login", gzip + "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" + get, false},
		{"pipelined then 404", get + "GET /admin/missing.js HTTP/1.1\r\nHost: x\r\n\r\n" + get, false},
		{"api", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"missing file", "GET /admin/missing.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"agent portal", "GET /agent/ HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"common folder", "GET /common/ HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"admin redirect", "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"absolute-form", "GET http://x/admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"absolute-form other host", "GET http://other/admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"escaped path", "GET /admin/%61dmin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"dot segment", "GET /admin/./admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"double slash", "GET //admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"fragment", "GET /admin/admin.js#x HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"http/1.0", "GET /admin/admin.js HTTP/1.0\r\n\r\n", false},
		{"http/1.0 keep-alive", "GET /admin/admin.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get, false},
		{"connection close", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get, false},
		{"static then close", get + "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get, false},
		{"oversized header", big, false},
		{"static then oversized", get + big, false},
		{"large header", large + get, false},
		{"static then large header", get + large + get, false},
		{"cl+te", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, false},
		{"te chunked get", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n" + get, false},
		{"te chunked smuggle", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"te identity", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + get, false},
		{"content-length 0", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + get, false},
		{"content-length body", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd" + get, false},
		{"duplicate content-length", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde" + get, false},
		{"bare LF", "GET /admin/admin.js HTTP/1.1\nHost: x\n\n" + get, false},
		{"bare LF in headers", "GET /admin/admin.js HTTP/1.1\r\nHost: x\nX: y\r\n\r\n" + get, false},
		{"bare CR", "GET /admin/admin.js HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", false},
		{"space before colon", "GET /admin/admin.js HTTP/1.1\r\nHost : x\r\n\r\n", false},
		{"space before colon te", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", false},
		{"obs-fold", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n" + get, false},
		{"leading space header", "GET /admin/admin.js HTTP/1.1\r\n Host: x\r\n\r\n", false},
		{"duplicate host", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false},
		{"missing host", "GET /admin/admin.js HTTP/1.1\r\n\r\n", false},
		{"bad host", "GET /admin/admin.js HTTP/1.1\r\nHost: a b\r\n\r\n", false},
		{"nul in value", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", false},
		{"del in value", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", false},
		{"bad header name", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n", false},
		{"no colon", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", false},
		{"empty name", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", false},
		{"duplicate accept-encoding", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\nAccept-Encoding: gzip\r\n\r\n", false},
		{"duplicate if-none-match", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\nIf-None-Match: " + etag + "\r\n\r\n", false},
		{"duplicate request id", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n", false},
		{"expect", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false},
		{"upgrade h2c", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", false},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"post", "POST /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false},
		{"lowercase method", "get /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"double space", "GET  /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"trailing space", "GET /admin/admin.js HTTP/1.1 \r\nHost: x\r\n\r\n", false},
		{"http/1.2", "GET /admin/admin.js HTTP/1.2\r\nHost: x\r\n\r\n", false},
		{"leading crlf", "\r\nGET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"truncated head", "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n", false},
		{"truncated request line", "GET /admin/adm", false},
		{"static then truncated", get + "GET /admin/admin.js HTTP/1.1\r\nHo", false},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false},
		{"empty", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := lane.fast.handovers.Load()
			got := exchange(t, lane.Addr().String(), tc.input)
			handed := lane.fast.handovers.Load() != before
			want := exchange(t, refAddr, tc.input)
			if got != want {
				i := 0
				for i < len(got) && i < len(want) && got[i] == want[i] {
					i++
				}
				t.Errorf("fast lane answered %d bytes, net/http %d, from byte %d:\n%.300q\nnet/http\n%.300q", len(got), len(want), i, got[i:], want[i:])
			}
			if handed == tc.fast {
				t.Errorf("handed over to net/http: %v, want %v", handed, !tc.fast)
			}
			if want == "" && tc.input != "" && tc.name != "truncated request line" && tc.name != "truncated head" {
				t.Errorf("net/http sent nothing")
			}
		})
	}
	// The lane's requests count under the route chi would have named.
	for _, route := range []string{staticRoute, commonRoute} {
		for _, code := range []string{"200", "304"} {
			if a, b := testutil.ToFloat64(lane.m.requests.WithLabelValues(route, code)),
				testutil.ToFloat64(ref.m.requests.WithLabelValues(route, code)); a != b || a == 0 && code == "200" {
				t.Errorf("requests_total{route=%s,code=%s}: fast lane %v, net/http %v", route, code, a, b)
			}
		}
	}
}

// TestFastLaneKeepAlive: a client that reuses its connection gets the lane's answers, then
// net/http's on the same connection once it asks for something else.
func TestFastLaneKeepAlive(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i, target := range []string{"/admin/admin.js", "/admin/", "/admin/admin.css", "/healthz", "/admin/admin.js"} {
		time.Sleep(10 * time.Millisecond) // the lane waits idle between requests
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || int64(len(body)) != res.ContentLength && res.ContentLength >= 0 || res.Close {
			t.Fatalf("%s: %d, %d bytes of %d, close %v", target, res.StatusCode, len(body), res.ContentLength, res.Close)
		}
		if want := uint64(0); i < 3 && s.fast.handovers.Load() != want {
			t.Fatalf("%s: handed over", target)
		}
	}
	if n := s.fast.handovers.Load(); n != 1 {
		t.Errorf("%d handovers, want 1", n)
	}
}

// TestFastLaneLimitsAndLog: the per-IP request limit, the connection cap, the access log and
// the metrics apply to the lane's requests as to net/http's.
func TestFastLaneLimitsAndLog(t *testing.T) {
	t.Run("rate limit", func(t *testing.T) {
		cfg := Defaults()
		cfg.JWT = testJWTConfig(t)
		cfg.RateLimit.PerIP, cfg.RateLimit.Burst = 0.01, 3
		lane := laneServer(t, cfg, slog.New(slog.DiscardHandler))
		ref, refAddr := refServer(t, cfg, slog.New(slog.DiscardHandler))
		in := strings.Repeat("GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n", 5)
		got, want := exchange(t, lane.Addr().String(), in), exchange(t, refAddr, in)
		if got != want {
			t.Errorf("fast lane\n%.300q\nnet/http\n%.300q", got, want)
		}
		if n := strings.Count(got, "HTTP/1.1 200 OK"); n != 3 || strings.Count(got, "HTTP/1.1 429 ") != 2 {
			t.Errorf("%d answers 200, want 3 then 429s: %.300q", n, got)
		}
		for _, s := range []*Server{lane, ref} {
			if n := testutil.ToFloat64(s.m.limited.WithLabelValues("all", defaultClass)); n != 2 {
				t.Errorf("rate_limited_total{limit=all} = %v, want 2", n)
			}
			if n := testutil.ToFloat64(s.m.requests.WithLabelValues(staticRoute, "200")); n != 3 {
				t.Errorf("requests_total{route=/admin/*,code=200} = %v, want 3", n)
			}
		}
	})
	t.Run("connection cap", func(t *testing.T) {
		cfg := Defaults()
		cfg.JWT = testJWTConfig(t)
		cfg.RateLimit.MaxConnsPerIP = 1
		s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
		a, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(a)
		io.WriteString(a, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n")
		if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
			t.Fatalf("first connection: %v %v", res, err)
		}
		// a is now idle in the lane and still counts.
		if got := exchange(t, s.Addr().String(), "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 429 ") {
			t.Errorf("second connection: %.100q, want 429", got)
		}
		a.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := exchange(t, s.Addr().String(), "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n")
			if strings.HasPrefix(got, "HTTP/1.1 200 ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the first closed: %.100q", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("access log", func(t *testing.T) {
		lines := func(b *syncBuffer) []map[string]any {
			var out []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err == nil && m["msg"] == "http request" {
					delete(m, "time")
					delete(m, "duration_ms")
					out = append(out, m)
				}
			}
			return out
		}
		cfg := Defaults()
		cfg.JWT = testJWTConfig(t)
		var lb, rb syncBuffer
		lane := laneServer(t, cfg, slog.New(slog.NewJSONHandler(&lb, nil)))
		_, refAddr := refServer(t, cfg, slog.New(slog.NewJSONHandler(&rb, nil)))
		etag := lane.static.assets["/admin/admin.js"].plain.etag[0]
		in := "GET /admin/admin.js?x=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-7\r\n\r\n" +
			"HEAD /admin/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-8\r\nAccept-Encoding: gzip\r\n\r\n" +
			"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-9\r\nIf-None-Match: " + etag + "\r\n\r\n" +
			"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
		exchange(t, lane.Addr().String(), in)
		exchange(t, refAddr, in)
		got, want := lines(&lb), lines(&rb)
		if len(got) != 4 || len(want) != 4 {
			t.Fatalf("%d and %d lines, want 4:\n%s\n%s", len(got), len(want), lb.String(), rb.String())
		}
		for i := range got {
			gid, _ := got[i]["request_id"].(string)
			wid, _ := want[i]["request_id"].(string)
			if i == 3 { // generated: same form, another number
				re := regexp.MustCompile(`^` + regexp.QuoteMeta(reqIDPrefix) + `-\d{6,}$`)
				if !re.MatchString(gid) || !re.MatchString(wid) {
					t.Errorf("generated ids %q, %q", gid, wid)
				}
				delete(got[i], "request_id")
				delete(want[i], "request_id")
			}
			gj, _ := json.Marshal(got[i])
			wj, _ := json.Marshal(want[i])
			if !bytes.Equal(gj, wj) {
				t.Errorf("line %d: fast lane %s, net/http %s", i, gj, wj)
			}
		}
	})
}

// TestFastLaneShutdown: Stop closes the lane's idle keep-alive connections at once, a
// connection that the lane answers while shutting down gets Connection: close, and Stop returns.
func TestFastLaneShutdown(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.Listen = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatal(res, err)
		}
		io.Copy(io.Discard, res.Body)
		conns = append(conns, c)
	}
	start := time.Now()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stop took %v", d)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection %d after Stop: %d bytes, %v; want EOF", i, n, err)
		}
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Stop")
	}
}

func TestFastLaneClosingAnswer(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	defer s.fast.closing.Store(false)
	// The lane drops a connection it finds idle once closing is set (as Close does), and
	// answers one whose request it is already reading. Setting the flag while the lane is
	// between its idle check and its read cannot be told apart from outside, so a round that
	// finds its connection dropped without an answer is tried again; the answer, whenever one
	// comes, must carry Connection: close.
	for round := 0; round < 20; round++ {
		s.fast.closing.Store(false)
		raw, answered := closingRound(t, s)
		if !answered {
			continue
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		// net/http's place for it: after the handler's headers, before Date.
		if !res.Close || !bytes.Contains(raw, []byte("\r\nConnection: close\r\nDate: ")) || int64(len(body)) != res.ContentLength {
			t.Errorf("close %v, %d bytes: %.400q", res.Close, len(body), raw)
		}
		return
	}
	t.Fatal("in 20 rounds the lane never answered a request that arrived while closing")
}

// closingRound serves one request on a new connection, waits until the lane waits idle for the
// next, sets closing, sends a second request and returns what came back (answered: a response
// rather than a dropped connection).
func closingRound(t *testing.T, s *Server) ([]byte, bool) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.Close {
		t.Fatal(res, err)
	}
	io.Copy(io.Discard, res.Body)
	idle := func() bool {
		s.fast.mu.Lock()
		defer s.fast.mu.Unlock()
		for fc := range s.fast.conns {
			if fc.idle.Load() {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !idle(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the lane never went idle after its answer")
		}
	}
	s.fast.closing.Store(true) // as Close does, without closing the idle connection first
	io.WriteString(c, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, err := io.ReadAll(br) // until the server closes
	if len(raw) == 0 {
		return nil, false // dropped while idle (EOF, or a reset for the unread request)
	}
	if err != nil {
		t.Fatal(err)
	}
	return raw, true
}

// TestFastLaneTrustedProxy: connections from a trusted proxy go straight to net/http, which
// reads the client address from X-Forwarded-For.
func TestFastLaneTrustedProxy(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.TrustedProxies = []string{"127.0.0.1/32"}
	var lb syncBuffer
	s := laneServer(t, cfg, slog.New(slog.NewJSONHandler(&lb, nil)))
	got := exchange(t, s.Addr().String(), "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") {
		t.Fatalf("%.100q", got)
	}
	if n := s.fast.handovers.Load(); n != 1 {
		t.Errorf("%d handovers, want 1", n)
	}
	if !strings.Contains(lb.String(), `"remote":"192.0.2.7"`) {
		t.Errorf("access log without the forwarded client: %s", lb.String())
	}
}
