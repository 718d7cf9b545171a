package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/dualgate/dualgate/web/tlsmode"
)

// tlsTestServer is the HTTP plane in TLS files mode on a loopback port.
type tlsTestServer struct {
	*Server
	reg  *prometheus.Registry
	pool *x509.CertPool
}

// startTLSServer starts the plane with a self-signed certificate for 127.0.0.1, cfg edited
// by edit and the handshake workers watched by hooks. With stop, the test's cleanup stops it.
func startTLSServer(t *testing.T, edit func(*Config), hooks handshakeHooks, stop bool) *tlsTestServer {
	t.Helper()
	cert := selfSigned(t)
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

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
	return &tlsTestServer{Server: s, reg: reg, pool: pool}
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
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stall starts a handshake and stops sending: a record header announcing a 512-byte
// handshake message, then a few bytes of it.
func stall(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond (bounded: 15 s) and fails the test with what when it never holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never happened: %s", what)
}

// closedByServer reports whether the server closed c (a read ends in EOF or a reset, not in
// the read deadline).
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func (s *tlsTestServer) queued() float64     { return testutil.ToFloat64(s.hsMetrics.Queued) }
func (s *tlsTestServer) inProgress() float64 { return testutil.ToFloat64(s.hsMetrics.InProgress) }
func (s *tlsTestServer) drops(reason string) float64 {
	return testutil.ToFloat64(s.hsMetrics.Drops.WithLabelValues(reason))
}
func (s *tlsTestServer) failures(reason string) float64 {
	return testutil.ToFloat64(s.hsMetrics.Failures.WithLabelValues(reason))
}

// concurrency counts the handshakes between the start and end hooks and keeps the maximum.
type concurrency struct {
	cur, max atomic.Int64
}

func (c *concurrency) enter() {
	n := c.cur.Add(1)
	for m := c.max.Load(); n > m && !c.max.CompareAndSwap(m, n); m = c.max.Load() {
	}
}

func (c *concurrency) leave() { c.cur.Add(-1) }

// TestHandshakeFloodIsBounded: 48 TLS clients at once are all served, with never more than
// the configured number of handshakes in progress. The workers are held at the start of
// their handshake until every other connection is queued, so the bound is reached and tested,
// whatever the machine's speed.
func TestHandshakeFloodIsBounded(t *testing.T) {
	const workers, clients = 4, 48
	var cc concurrency
	gate := make(chan struct{})
	hooks := handshakeHooks{
		start: func(net.Conn) { cc.enter(); <-gate },
		end:   func(net.Conn, error) { cc.leave() },
	}
	s := startTLSServer(t, func(c *Config) { c.TLSHandshakes.Concurrency = workers }, hooks, true)
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // runs before the server's stop

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		ip := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}[i%3]
		wg.Go(func() {
			res, err := s.client(ip, i%2 == 0).Get(s.url("/healthz"))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				errs <- errors.New(res.Status)
			}
		})
	}
	waitUntil(t, "every worker busy and the other connections queued", func() bool {
		return cc.cur.Load() == workers && s.queued() == clients-workers
	})
	if g := s.inProgress(); g != workers {
		t.Errorf("in-progress gauge %v, want %d", g, workers)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	if m := cc.max.Load(); m != workers {
		t.Errorf("at most %d handshakes in progress at once, want exactly the bound %d", m, workers)
	}
	if n := testutil.ToFloat64(s.hsMetrics.Done); n != clients {
		t.Errorf("handshakes_total %v, want %d", n, clients)
	}
	if s.queued() != 0 || s.inProgress() != 0 {
		t.Errorf("after the flood: queued %v, in progress %v, want 0 and 0", s.queued(), s.inProgress())
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestHandshakesInArrivalOrder: with one worker, queued connections are handshaken in the
// order they were accepted.
func TestHandshakesInArrivalOrder(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string
	hooks := handshakeHooks{start: func(c net.Conn) {
		mu.Lock()
		order = append(order, c.RemoteAddr().String())
		first := len(order) == 1
		mu.Unlock()
		if first {
			<-gate
		}
	}}
	s := startTLSServer(t, func(c *Config) { c.TLSHandshakes.Concurrency = 1 }, hooks, true)
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)

	blocker := s.rawConn(t, "127.0.0.21")
	waitUntil(t, "the first connection in its handshake", func() bool { return s.inProgress() == 1 })
	var want []string
	var conns []*tls.Conn
	for i := range 6 {
		c := s.rawConn(t, "127.0.0.21")
		want = append(want, c.LocalAddr().String())
		conns = append(conns, tls.Client(c, &tls.Config{RootCAs: s.pool, ServerName: "127.0.0.1"}))
		waitUntil(t, "the connection queued", func() bool { return s.queued() == float64(i+1) })
	}
	blocker.Close()
	release()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if err := c.Handshake(); err != nil {
				t.Errorf("handshake: %v", err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order[1:], " "); got != strings.Join(want, " ") {
		t.Errorf("handshakes started in the order\n%s\nwant the arrival order\n%s", got, strings.Join(want, " "))
	}
}

// TestHTTP2StillNegotiated: the handshake now happens before net/http sees the connection,
// and ALPN still gives h2 (and HTTP/1.1 to a client that offers only that); a plain HTTP
// request on the TLS port still gets net/http's 400.
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
	if n := s.failures("plain_http"); n != 1 {
		t.Errorf("failures{plain_http} = %v, want 1", n)
	}
}

// TestStalledHandshakeBlocksOnlyUntilItsDeadline: with one worker, two clients that stall
// mid-handshake hold it for one handshake deadline each; the clients queued behind them then
// complete, although they waited longer than a handshake deadline: the deadline counts from
// the handshake's start, not from accept.
func TestStalledHandshakeBlocksOnlyUntilItsDeadline(t *testing.T) {
	const hsTimeout = 2 * time.Second
	var mu sync.Mutex
	var ends []error
	hooks := handshakeHooks{end: func(_ net.Conn, err error) {
		mu.Lock()
		ends = append(ends, err)
		mu.Unlock()
	}}
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes.Concurrency = 1
		c.TLSHandshakes.QueueWait = 30 * time.Second
		c.Timeouts.ReadHeader = hsTimeout // the handshake deadline: min(read_header, read, write)
	}, hooks, true)

	a := s.rawConn(t, "127.0.0.41")
	stall(t, a)
	waitUntil(t, "the first staller in its handshake", func() bool { return s.inProgress() == 1 })
	b := s.rawConn(t, "127.0.0.41")
	stall(t, b)
	waitUntil(t, "the second staller queued, or in its handshake", func() bool { return s.queued() == 1 || s.failures("timeout") >= 1 })

	const clients = 5
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			res, err := s.client("127.0.0.42", true).Get(s.url("/healthz"))
			if err != nil {
				t.Errorf("client behind the stallers: %v", err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	}
	wg.Wait()
	for _, c := range []net.Conn{a, b} {
		if !closedByServer(c) {
			t.Error("a stalled handshake was not closed at its deadline")
		}
	}
	if n := s.failures("timeout"); n != 2 {
		t.Errorf("failures{timeout} = %v, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ends) != 2+clients {
		t.Fatalf("%d handshakes ended, want %d", len(ends), 2+clients)
	}
	for i, err := range ends {
		if (i < 2) != (err != nil) {
			t.Errorf("handshake %d ended with %v; want the two stallers first, failed, and the rest done", i, err)
		}
	}
}

// TestHandshakeQueueLimits: the per-IP connection cap applies before a connection queues; a
// connection arriving at a full queue is closed (queue_full), and one that waits longer than
// queue_wait is closed (queue_timeout).
func TestHandshakeQueueLimits(t *testing.T) {
	// held starts a server whose workers wait at the start of each handshake until the test
	// ends (the release runs before the server's stop).
	held := func(hc HandshakeConfig, maxConns int) *tlsTestServer {
		gate := make(chan struct{})
		s := startTLSServer(t, func(c *Config) {
			c.TLSHandshakes = hc
			c.RateLimit.MaxConnsPerIP = maxConns
		}, handshakeHooks{start: func(net.Conn) { <-gate }}, true)
		t.Cleanup(func() { close(gate) })
		return s
	}
	s := held(HandshakeConfig{Concurrency: 1, Queue: 2, QueueWait: time.Minute}, 2)
	limited := func() float64 { return testutil.ToFloat64(s.m.limited.WithLabelValues("connections", defaultClass)) }

	s.rawConn(t, "127.0.0.51") // the worker holds it
	waitUntil(t, "the worker busy", func() bool { return s.inProgress() == 1 })
	q1 := s.rawConn(t, "127.0.0.51")
	waitUntil(t, "one queued", func() bool { return s.queued() == 1 })
	overCap := s.rawConn(t, "127.0.0.51") // third from one IP: the cap closes it, it never queues
	if !closedByServer(overCap) {
		t.Error("a connection over the per-IP cap was not closed")
	}
	if limited() != 1 || s.queued() != 1 || s.drops("queue_full") != 0 {
		t.Errorf("over the cap: limited %v, queued %v, queue_full %v; want 1, 1, 0", limited(), s.queued(), s.drops("queue_full"))
	}
	s.rawConn(t, "127.0.0.52")
	waitUntil(t, "the queue full", func() bool { return s.queued() == 2 })
	full := s.rawConn(t, "127.0.0.53")
	if !closedByServer(full) {
		t.Error("a connection arriving at a full queue was not closed")
	}
	if s.drops("queue_full") != 1 || s.queued() != 2 {
		t.Errorf("queue_full drops %v, queued %v; want 1 and 2", s.drops("queue_full"), s.queued())
	}
	q1.Close()

	short := held(HandshakeConfig{Concurrency: 1, QueueWait: 200 * time.Millisecond}, 64)
	short.rawConn(t, "127.0.0.54")
	waitUntil(t, "the worker busy", func() bool { return short.inProgress() == 1 })
	late := short.rawConn(t, "127.0.0.54")
	if !closedByServer(late) {
		t.Error("a connection past queue_wait was not closed")
	}
	if short.drops("queue_timeout") != 1 || short.queued() != 0 {
		t.Errorf("queue_timeout drops %v, queued %v; want 1 and 0", short.drops("queue_timeout"), short.queued())
	}
}

// TestShutdownClosesQueuedHandshakes: Stop closes the connections waiting for a worker and
// aborts the handshake in progress, without waiting for their deadlines.
func TestShutdownClosesQueuedHandshakes(t *testing.T) {
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes = HandshakeConfig{Concurrency: 1, QueueWait: time.Minute}
		c.Timeouts.ReadHeader = time.Minute // the stalled handshake would hold its worker a minute
		c.Timeouts.Shutdown = 5 * time.Second
	}, handshakeHooks{}, false)
	staller := s.rawConn(t, "127.0.0.61")
	stall(t, staller)
	waitUntil(t, "the staller in its handshake", func() bool { return s.inProgress() == 1 })
	var queued []net.Conn
	for i := range 3 {
		queued = append(queued, s.rawConn(t, "127.0.0.62"))
		waitUntil(t, "queued", func() bool { return s.queued() == float64(i+1) })
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, c := range append(queued, staller) {
		if !closedByServer(c) {
			t.Error("a connection was left open by the shutdown")
		}
	}
	if s.drops("shutdown") != 3 || s.failures("shutdown") != 1 || s.queued() != 0 || s.inProgress() != 0 {
		t.Errorf("after stop: drops{shutdown} %v, failures{shutdown} %v, queued %v, in progress %v; want 3, 1, 0, 0",
			s.drops("shutdown"), s.failures("shutdown"), s.queued(), s.inProgress())
	}
}
