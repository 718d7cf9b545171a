package sip

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
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

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// tlsRouter is a started router with one tls: listener on a loopback port.
type tlsRouter struct {
	*Router
	reg  *prometheus.Registry
	pool *x509.CertPool
	addr string
}

// startTLSRouter starts a router listening on tls:127.0.0.1:0 with a self-signed certificate
// for 127.0.0.1, the given handshake admission and the handshake workers watched by hooks.
func startTLSRouter(t *testing.T, hc HandshakeConfig, hooks tlsHooksForTest) *tlsRouter {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)

	cfg := Defaults()
	cfg.Listen = []string{"tls:127.0.0.1:0"}
	cfg.TLS = TLSConfig{CertFile: certFile, KeyFile: keyFile, Handshakes: hc}
	cfg.Guard.Rate, cfg.Guard.Burst = 1000, 1000 // every client here comes from 127.0.0.1
	disp, err := dispatcher.New([]dispatcher.Spec{{SetID: 1, URI: "sip:127.0.0.1:5070"}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, disp, nil, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	r.tlsHooks.Start, r.tlsHooks.End = hooks.start, hooks.end
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &tlsRouter{Router: r, reg: reg, pool: pool, addr: r.bound[0].String()}
}

type tlsHooksForTest struct {
	start func(net.Conn)
	end   func(net.Conn, error)
}

func (r *tlsRouter) queued() float64     { return testutil.ToFloat64(r.tlsMetrics.Queued) }
func (r *tlsRouter) inProgress() float64 { return testutil.ToFloat64(r.tlsMetrics.InProgress) }
func (r *tlsRouter) failures(reason string) float64 {
	return testutil.ToFloat64(r.tlsMetrics.Failures.WithLabelValues(reason))
}

// options connects over TLS, sends an OPTIONS to the gateway itself and returns the status
// line of the answer.
func (r *tlsRouter) options() (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", r.addr)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, &tls.Config{RootCAs: r.pool, ServerName: "127.0.0.1"})
	if err := c.Handshake(); err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	la, id := c.LocalAddr().String(), time.Now().UnixNano()
	req := fmt.Sprintf("OPTIONS sip:%s;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK-adm%d\r\n"+
		"From: <sip:phone@%s>;tag=a1\r\nTo: <sip:%s>\r\nCall-ID: adm-%d@%s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		r.addr, la, id, la, r.addr, id, la)
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// rawConn is a TCP connection to the listener that has not started a handshake.
func (r *tlsRouter) rawConn(t *testing.T) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stallTLS starts a handshake and stops sending: a record header announcing a 512-byte
// handshake message, then a few bytes of it.
func stallTLS(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never happened: %s", what)
}

// TestSIPTLSHandshakeStormIsBounded: 40 TLS phones connecting at once to a tls: listener are
// all handshaken and answered by sipgo, with never more than the configured number of
// handshakes in progress. The workers are held at the start of their handshake until every
// other connection is queued, so the bound is reached and tested whatever the machine's speed.
func TestSIPTLSHandshakeStormIsBounded(t *testing.T) {
	const workers, clients = 4, 40
	var cur, most atomic.Int64
	gate := make(chan struct{})
	r := startTLSRouter(t, HandshakeConfig{Concurrency: workers}, tlsHooksForTest{
		start: func(net.Conn) {
			n := cur.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-gate
		},
		end: func(net.Conn, error) { cur.Add(-1) },
	})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // runs before the router's stop

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			line, err := r.options()
			if err == nil && line != "SIP/2.0 200 OK" {
				err = errors.New(line)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	eventually(t, "every worker busy and the other connections queued", func() bool {
		return cur.Load() == workers && r.queued() == clients-workers
	})
	if g := r.inProgress(); g != workers {
		t.Errorf("in-progress gauge %v, want %d", g, workers)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("phone: %v", err)
	}
	if m := most.Load(); m != workers {
		t.Errorf("at most %d handshakes in progress at once, want exactly the bound %d", m, workers)
	}
	if n := testutil.ToFloat64(r.tlsMetrics.Done); n != clients {
		t.Errorf("handshakes_total %v, want %d", n, clients)
	}
	if r.queued() != 0 || r.inProgress() != 0 {
		t.Errorf("after the storm: queued %v, in progress %v, want 0 and 0", r.queued(), r.inProgress())
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"gateway_sip_tls_handshakes_in_progress", "gateway_sip_tls_handshakes_queued",
		"gateway_sip_tls_handshakes_total", "gateway_sip_tls_handshake_queue_wait_seconds"} {
		if !names[n] {
			t.Errorf("no series %s", n)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// TestSIPTLSStalledHandshakeBlocksOnlyUntilItsDeadline: with one worker, two clients that
// stall mid-handshake hold it for one handshake deadline each; the phones queued behind them
// then complete (handshake and OPTIONS), within about those two deadlines, although they
// waited longer than one: the deadline counts from the handshake's start, not from accept.
func TestSIPTLSStalledHandshakeBlocksOnlyUntilItsDeadline(t *testing.T) {
	const hsTimeout = time.Second
	var mu sync.Mutex
	var ends []error
	r := startTLSRouter(t, HandshakeConfig{Concurrency: 1, QueueWait: 30 * time.Second, Timeout: hsTimeout},
		tlsHooksForTest{end: func(_ net.Conn, err error) {
			mu.Lock()
			ends = append(ends, err)
			mu.Unlock()
		}})

	a := r.rawConn(t)
	stallTLS(t, a)
	eventually(t, "the first staller in its handshake", func() bool { return r.inProgress() == 1 })
	start := time.Now()
	b := r.rawConn(t)
	stallTLS(t, b)
	eventually(t, "the second staller queued, or in its handshake", func() bool { return r.queued() == 1 || r.failures("timeout") >= 1 })

	const clients = 5
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			if line, err := r.options(); err != nil || line != "SIP/2.0 200 OK" {
				t.Errorf("phone behind the stallers: %q, %v", line, err)
			}
		})
	}
	wg.Wait()
	// The phones waited for at most the two stallers' deadlines (2 s) plus their own
	// handshakes; 6 s leaves room for a slow machine under -race, and is far below the
	// 30 s queue_wait they would otherwise have been held to.
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("phones behind two stalled handshakes were served after %v, want about 2 × %v", took, hsTimeout)
	}
	for _, c := range []net.Conn{a, b} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Error("a stalled handshake was not closed at its deadline")
		}
	}
	if n := r.failures("timeout"); n != 2 {
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

// TestSIPTLSHandshakesConfig: the defaults and the validation of sip.tls.handshakes.
func TestSIPTLSHandshakesConfig(t *testing.T) {
	got := HandshakeConfig{}.admission()
	if got.Timeout != 5*time.Second || got.QueueWait != 15*time.Second || got.Queue != 16384 || got.Concurrency <= 0 {
		t.Errorf("defaults %+v: want timeout 5s, queue_wait 15s, queue 16384, concurrency 64 × GOMAXPROCS", got)
	}
	if got := (HandshakeConfig{Timeout: 2 * time.Second}).admission(); got.QueueWait != 6*time.Second {
		t.Errorf("queue_wait with timeout 2s: %v, want 6s", got.QueueWait)
	}
	cfg := Defaults()
	cfg.TLS.Handshakes.Queue = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "sip.tls.handshakes") {
		t.Errorf("negative queue: %v, want a sip.tls.handshakes error", err)
	}
}
