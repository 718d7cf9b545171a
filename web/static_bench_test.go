package web

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/static"
)

// benchServer is the HTTP plane as bench/dualgate-http.yaml runs it: the embedded portals,
// log level warn (no access log lines), no rate limits.
func benchServer(b *testing.B) *Server {
	b.Helper()
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.JWT.EphemeralSecret = true
	cfg.RateLimit.PerIP, cfg.RateLimit.MaxConnsPerIP = 0, 0
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// discardWriter is a ResponseWriter that keeps nothing, so the handler chain is all that is
// measured. Like net/http's, its header map is fresh per response (cleared, not reallocated).
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

// BenchmarkStaticChain is one static asset through the whole handler chain (request ID,
// client IP, access log and metrics, recovery, security headers, rate limit, routing, the
// asset), without sockets.
func BenchmarkStaticChain(b *testing.B) {
	s := benchServer(b)
	h := s.Handler()
	for _, bc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"plain", nil, 200},
		{"gzip", map[string]string{"Accept-Encoding": "gzip, deflate, br"}, 200},
		{"not-modified", map[string]string{"If-None-Match": s.static.assets["/admin/admin.js"].plain.etag[0]}, 304},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/admin/admin.js", nil)
			req.RemoteAddr = "127.0.0.1:40000"
			for k, v := range bc.hdr {
				req.Header.Set(k, v)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, req)
			}
			if w.status != bc.want {
				b.Fatalf("status %d, want %d", w.status, bc.want)
			}
		})
	}
}

// BenchmarkStaticLoopback is the static asset over real keep-alive connections on loopback,
// through Start's listener (so the fast lane, web/fastlane.go): what bench/http-bench.sh
// measures, minus wrk.
func BenchmarkStaticLoopback(b *testing.B) {
	for _, bc := range []struct{ name, hdr string }{{"plain", ""}, {"gzip", "Accept-Encoding: gzip\r\n"}} {
		b.Run(bc.name, func(b *testing.B) {
			s := benchServer(b)
			if err := s.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer s.Stop(context.Background())
			req := []byte("GET /admin/admin.js HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bc.hdr + "\r\n")
			b.SetParallelism(4)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readResponse(br); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// readResponse reads one response with a Content-Length and discards it.
func readResponse(br *bufio.Reader) error {
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 {
		return io.ErrUnexpectedEOF
	}
	_, err := br.Discard(n)
	return err
}
