package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dualgate/dualgate/internal/tlsadmit"
	"github.com/dualgate/dualgate/internal/tlsadmit/tlsadmittest"
	"github.com/dualgate/dualgate/web/tlsmode"
)

// The admission mechanism (bound, order, deadlines, queue limits, Close) is tested in
// internal/tlsadmit; here is what the HTTP plane adds: its settings, net/http behind the
// admitted connections, the per-IP cap in front of the queue, its series and Stop.

// tlsTestServer is the HTTP plane in TLS files mode on a loopback port.
type tlsTestServer struct {
	*Server
	reg  *prometheus.Registry
	pool *x509.CertPool
	adm  tlsadmittest.Metrics // the handshake admission's series
}

// startTLSServer starts the plane with a self-signed certificate for 127.0.0.1, cfg edited
// by edit and the handshake workers watched by hooks. With stop, the test's cleanup stops it.
func startTLSServer(t *testing.T, edit func(*Config), hooks handshakeHooks, stop bool) *tlsTestServer {
	t.Helper()
	certFile, keyFile, pool := tlsadmittest.CertFiles(t)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.JWT = testJWTConfig(t)
	cfg.TLS = tlsmode.Config{Mode: tlsmode.ModeFiles, CertFile: certFile, KeyFile: keyFile}
	if edit != nil {
		edit(&cfg)
	}
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Metrics: reg}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	s.hsHooks = hooks
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stop {
		t.Cleanup(func() {
			if err := s.Stop(context.Background()); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
	}
	return &tlsTestServer{Server: s, reg: reg, pool: pool, adm: tlsadmittest.Metrics{Metrics: s.hsMetrics}}
}

// client is an HTTPS client from a loopback address; h2 says whether it offers HTTP/2.
func (s *tlsTestServer) client(ip string, h2 bool) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, ForceAttemptHTTP2: h2,
		TLSClientConfig: &tls.Config{RootCAs: s.pool}, TLSHandshakeTimeout: 20 * time.Second}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

func (s *tlsTestServer) url(path string) string { return "https://" + s.Addr().String() + path }

// rawConn is a TCP connection to the server from ip that has not started a handshake.
func (s *tlsTestServer) rawConn(t *testing.T, ip string) net.Conn {
	t.Helper()
	return tlsadmittest.Dial(t, ip, s.Addr().String())
}

// TestHTTP2StillNegotiated: the handshake happens before net/http sees the connection, and
// ALPN still gives h2 (and HTTP/1.1 to a client that offers only that) with HSTS; a plain HTTP
// request on the TLS port still gets net/http's 400, counted as failure plain_http. The
// admission's series keep their gateway_http_ names, and the registry passes promlint.
func TestHTTP2StillNegotiated(t *testing.T) {
	s := startTLSServer(t, nil, handshakeHooks{}, true)
	for _, h2 := range []bool{true, false} {
		res, err := s.client("127.0.0.31", h2).Get(s.url("/healthz"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		want := map[bool]int{true: 2, false: 1}[h2]
		if res.StatusCode != 200 || res.ProtoMajor != want {
			t.Errorf("offering h2=%v: %d over HTTP/%d, want 200 over HTTP/%d", h2, res.StatusCode, res.ProtoMajor, want)
		}
		if h2 && (res.TLS == nil || res.TLS.NegotiatedProtocol != "h2") {
			t.Errorf("ALPN did not negotiate h2: %+v", res.TLS)
		}
		if res.Header.Get("Strict-Transport-Security") == "" {
			t.Error("no HSTS header over TLS")
		}
	}
	c := s.rawConn(t, "127.0.0.31")
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.0 400 Bad Request") {
		t.Errorf("plain HTTP on the TLS port got %q, want a 400", b)
	}
	if n := s.adm.Failures("plain_http"); n != 1 {
		t.Errorf("failures{plain_http} = %v, want 1", n)
	}
	if n := s.adm.Done(); n != 2 {
		t.Errorf("handshakes_total %v, want 2", n)
	}

	s.adm.Drops("queue_full") // a drops series to gather
	tlsadmittest.CheckSeries(t, s.reg, "gateway_http_tls_handshakes_in_progress", "gateway_http_tls_handshakes_queued",
		"gateway_http_tls_handshakes_total", "gateway_http_tls_handshake_failures_total",
		"gateway_http_tls_handshake_queue_drops_total", "gateway_http_tls_handshake_queue_wait_seconds")
}

// TestHandshakeAdmissionSettings: the HTTPS listener admits with tls_handshakes, a handshake
// deadline of net/http's own handshake budget min(read_header, read, write) and, by default,
// a queue wait of three of those.
func TestHandshakeAdmissionSettings(t *testing.T) {
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes = HandshakeConfig{Concurrency: 3, Queue: 5}
		c.Timeouts.ReadHeader, c.Timeouts.Read, c.Timeouts.Write = 20*time.Second, 4*time.Second, 30*time.Second
	}, handshakeHooks{}, true)
	want := tlsadmit.Config{Concurrency: 3, Queue: 5, QueueWait: 12 * time.Second, Timeout: 4 * time.Second}
	if got := s.hs.Config(); got != want {
		t.Errorf("admission %+v, want %+v", got, want)
	}
}

// TestConnCapBeforeHandshakeQueue: the per-IP connection cap applies before a connection
// queues for a handshake worker: the connection over the cap is closed, counted as limited,
// and neither queues nor counts as a queue drop.
func TestConnCapBeforeHandshakeQueue(t *testing.T) {
	gate := tlsadmittest.NewGate()
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes = HandshakeConfig{Concurrency: 1, Queue: 2, QueueWait: time.Minute}
		c.RateLimit.MaxConnsPerIP = 2
	}, handshakeHooks{start: func(net.Conn) { gate.Wait() }}, true)
	t.Cleanup(gate.Release) // runs before the server's stop
	limited := func() float64 { return testutil.ToFloat64(s.m.limited.WithLabelValues("connections", defaultClass)) }

	s.rawConn(t, "127.0.0.51") // the worker holds it
	tlsadmittest.Poll(t, "the worker busy", func() bool { return s.adm.InProgress() == 1 })
	s.rawConn(t, "127.0.0.51")
	tlsadmittest.Poll(t, "one queued", func() bool { return s.adm.Queued() == 1 })
	overCap := s.rawConn(t, "127.0.0.51") // third from one IP: the cap closes it, it never queues
	if !tlsadmittest.ClosedByServer(overCap) {
		t.Error("a connection over the per-IP cap was not closed")
	}
	if limited() != 1 || s.adm.Queued() != 1 || s.adm.Drops("queue_full") != 0 {
		t.Errorf("over the cap: limited %v, queued %v, queue_full %v; want 1, 1, 0", limited(), s.adm.Queued(), s.adm.Drops("queue_full"))
	}
}

// TestShutdownClosesQueuedHandshakes: Stop closes the connection waiting for a worker and
// aborts the handshake in progress, without waiting for their deadlines.
func TestShutdownClosesQueuedHandshakes(t *testing.T) {
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes = HandshakeConfig{Concurrency: 1, QueueWait: time.Minute}
		c.Timeouts.ReadHeader = time.Minute // the stalled handshake would hold its worker a minute
		c.Timeouts.Shutdown = 5 * time.Second
	}, handshakeHooks{}, false)
	staller := s.rawConn(t, "127.0.0.61")
	tlsadmittest.Stall(t, staller)
	tlsadmittest.Poll(t, "the staller in its handshake", func() bool { return s.adm.InProgress() == 1 })
	queued := s.rawConn(t, "127.0.0.62")
	tlsadmittest.Poll(t, "one queued", func() bool { return s.adm.Queued() == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop(context.Background()) }()
	if !tlsadmittest.ClosedByServer(queued) || !tlsadmittest.ClosedByServer(staller) {
		t.Error("a connection was left open by Stop")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if s.adm.Drops("shutdown") != 1 || s.adm.Failures("shutdown") != 1 || s.adm.Queued() != 0 || s.adm.InProgress() != 0 {
		t.Errorf("after stop: drops{shutdown} %v, failures{shutdown} %v, queued %v, in progress %v; want 1, 1, 0, 0",
			s.adm.Drops("shutdown"), s.adm.Failures("shutdown"), s.adm.Queued(), s.adm.InProgress())
	}
}
