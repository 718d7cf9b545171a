package sip

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/internal/tlsadmit"
	"github.com/dualgate/dualgate/internal/tlsadmit/tlsadmittest"
	"github.com/dualgate/dualgate/sip/dispatcher"
)

// tlsRouter is a started router with one tls: listener on a loopback port.
type tlsRouter struct {
	*Router
	reg  *prometheus.Registry
	pool *x509.CertPool
	addr string
	adm  tlsadmittest.Metrics // the handshake admission's series
}

// startTLSRouter starts a router listening on tls:127.0.0.1:0 with a self-signed certificate
// for 127.0.0.1, the given handshake admission and the handshake workers watched by hooks.
func startTLSRouter(t *testing.T, hc HandshakeConfig, hooks tlsadmit.Hooks) *tlsRouter {
	t.Helper()
	certFile, keyFile, pool := tlsadmittest.CertFiles(t)

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
	r.tlsHooks = hooks
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &tlsRouter{Router: r, reg: reg, pool: pool, addr: r.bound[0].String(), adm: tlsadmittest.Metrics{Metrics: r.tlsMetrics}}
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

// TestSIPTLSHandshakeStormIsBounded: 40 TLS phones connecting at once to a tls: listener are
// all handshaken and answered by sipgo, with never more than the configured number of
// handshakes in progress. The workers are held at the start of their handshake until every
// other connection is queued, so the bound is reached and tested whatever the machine's speed.
// The admission's series are named gateway_sip_… and the registry passes promlint.
func TestSIPTLSHandshakeStormIsBounded(t *testing.T) {
	const workers, clients = 4, 40
	var cc tlsadmittest.Concurrency
	gate := tlsadmittest.NewGate()
	r := startTLSRouter(t, HandshakeConfig{Concurrency: workers}, tlsadmit.Hooks{
		Start: func(net.Conn) { cc.Enter(); gate.Wait() },
		End:   func(net.Conn, error) { cc.Leave() },
	})
	t.Cleanup(gate.Release) // runs before the router's stop

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
	tlsadmittest.Poll(t, "every worker busy and the other connections queued", func() bool {
		return cc.Cur() == workers && r.adm.Queued() == clients-workers
	})
	gate.Release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("phone: %v", err)
	}
	if m := cc.Most(); m != workers {
		t.Errorf("at most %d handshakes in progress at once, want exactly the bound %d", m, workers)
	}
	if n := r.adm.Done(); n != clients {
		t.Errorf("handshakes_total %v, want %d", n, clients)
	}
	tlsadmittest.CheckSeries(t, r.reg, "gateway_sip_tls_handshakes_in_progress", "gateway_sip_tls_handshakes_queued",
		"gateway_sip_tls_handshakes_total", "gateway_sip_tls_handshake_queue_wait_seconds")
}

// TestSIPTLSStalledHandshakeBlocksOnlyUntilItsDeadline: with one worker, two clients that
// stall mid-handshake hold it for one handshake deadline (sip.tls.handshakes.timeout) each;
// the phones queued behind them are then handshaken and answered. Their queue_wait is set
// between the two deadlines they wait behind and the 5 s default timeout: were the configured
// timeout not the one applied, the first staller alone would hold them past it.
func TestSIPTLSStalledHandshakeBlocksOnlyUntilItsDeadline(t *testing.T) {
	const hsTimeout = time.Second
	r := startTLSRouter(t, HandshakeConfig{Concurrency: 1, QueueWait: 5 * hsTimeout, Timeout: hsTimeout}, tlsadmit.Hooks{})

	a := tlsadmittest.Dial(t, "", r.addr)
	tlsadmittest.Stall(t, a)
	tlsadmittest.Poll(t, "the first staller in its handshake", func() bool { return r.adm.InProgress() == 1 })
	b := tlsadmittest.Dial(t, "", r.addr)
	tlsadmittest.Stall(t, b)
	tlsadmittest.Poll(t, "the second staller queued, or in its handshake", func() bool {
		return r.adm.Queued() == 1 || r.adm.Failures("timeout") >= 1
	})

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
	for _, c := range []net.Conn{a, b} {
		if !tlsadmittest.ClosedByServer(c) {
			t.Error("a stalled handshake was not closed at its deadline")
		}
	}
	if n, d := r.adm.Failures("timeout"), r.adm.Drops("queue_timeout"); n != 2 || d != 0 {
		t.Errorf("failures{timeout} %v, drops{queue_timeout} %v; want 2 and 0", n, d)
	}
	if n := r.adm.Done(); n != clients {
		t.Errorf("handshakes_total %v, want %d", n, clients)
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
