package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/static"
	"github.com/dualgate/dualgate/web/auth"
)

// FuzzFastLaneDifferential sends the same byte stream on a fresh connection to the HTTP plane
// with the fast lane and to the same plane served by net/http alone, half-closes, and compares
// everything each sends back until it closes (Date lines blanked). The lane may answer a
// request only with net/http's bytes, and what it hands over must reach net/http unchanged.
//
// No metrics route (its body differs by design), no login accounts and no rate or connection
// limits (their state, and Retry-After, would carry from one input to the next). When a server resets the connection (it closed with input
// unread), what arrived before the reset may be cut short: then one answer must be a prefix
// of the other.
//
//	go test -run '^$' -fuzz FuzzFastLaneDifferential -fuzztime 60s ./web
func FuzzFastLaneDifferential(f *testing.F) {
	const get = "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, s := range []string{
		get,
		get + "HEAD /admin/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" + get,
		get + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + get,
		get + "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" + get,
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /" + get,
		"GET /admin/admin.js HTTP/1.1\nHost: x\n\n" + get,
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n" + get,
		"GET /admin/%61dmin.js HTTP/1.1\r\nHost: x\r\n\r\n" + get,
		"GET /admin/../admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x/admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /admin/admin.js HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get,
		"GET /admin/admin.js HTTP/1.1\r\nHost: [::1]:80\r\nIf-None-Match: \"x\"\r\nX-Request-Id: a\r\n\r\n",
		"\r\nGET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n",
		get + "GET /admin/admin.js HTTP/1.1\r\nHo",
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get,
	} {
		f.Add([]byte(s))
	}
	cfg := Defaults()
	cfg.JWT = auth.DefaultConfig()
	cfg.JWT.SecretFile = filepath.Join(f.TempDir(), "jwt.secret")
	if err := os.WriteFile(cfg.JWT.SecretFile, []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
		f.Fatal(err)
	}
	cfg.RateLimit = RateLimitConfig{} // no limits: their state carries from one input to the next
	log := slog.New(slog.DiscardHandler)
	lane := diffServer(f, cfg, log, true)
	ref := diffServer(f, cfg, log, false)
	for _, addr := range []string{lane, ref} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			f.Fatal(err)
		}
		_, _ = io.WriteString(c, get)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 16)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "HTTP/1.1 200 OK\r" {
			f.Fatalf("%s answers %q, %v", addr, b, err)
		}
		_ = c.Close()
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 32<<10 {
			return
		}
		got, gotReset := diffExchange(t, lane, in)
		want, wantReset := diffExchange(t, ref, in)
		if got == want {
			return
		}
		if (gotReset || wantReset) && (strings.HasPrefix(got, want) || strings.HasPrefix(want, got)) {
			return
		}
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("input %q\nfast lane %d bytes (reset %v), net/http %d (reset %v), from byte %d:\n%.400q\nnet/http\n%.400q",
			in, len(got), gotReset, len(want), wantReset, i, got[i:], want[i:])
	})
}

// diffServer starts the plane on loopback, with the fast lane or as net/http alone, and
// returns its address.
func diffServer(tb testing.TB, cfg Config, log *slog.Logger, fast bool) string {
	tb.Helper()
	cfg.Listen = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files}, log, reg)
	if err != nil {
		tb.Fatal(err)
	}
	if fast {
		if err := s.Start(context.Background()); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = s.Stop(context.Background()) })
		if s.fast == nil {
			tb.Fatal("no fast lane")
		}
		return s.Addr().String()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		tb.Fatal(err)
	}
	tm := cfg.Timeouts
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: tm.ReadHeader, ReadTimeout: tm.Read,
		WriteTimeout: tm.Write, IdleTimeout: tm.Idle, MaxHeaderBytes: cfg.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug), ConnContext: withBatchConn}
	go func() { _ = srv.Serve(batchListener{ln}) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// diffExchange is exchange that also reports whether the server reset the connection.
func diffExchange(t *testing.T, addr string, in []byte) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(in) // the server may close before reading it all
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	reset := errors.Is(err, syscall.ECONNRESET)
	if err != nil && !reset {
		t.Fatalf("read: %v", err)
	}
	return dateLine.ReplaceAllString(string(out), "Date: (date)\r"), reset
}
