// Package tlsadmittest holds the test helpers shared by the tests of internal/tlsadmit and of
// the planes that use it (web, sip): a self-signed certificate for 127.0.0.1, raw TCP
// connections that have not started their handshake, a stalled half ClientHello, a bounded
// poll, a closed-by-server check, a gate that holds handshake workers, a concurrency counter,
// readers of a listener's metrics and a check of a registry's series.
package tlsadmittest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/dualgate/dualgate/internal/tlsadmit"
)

// Cert is a self-signed server certificate for 127.0.0.1, valid for the hour around now, and a
// pool that trusts it.
func Cert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// CertFiles writes a self-signed certificate for 127.0.0.1 and its key as PEM files into a
// temporary directory, and returns their paths and a pool that trusts the certificate.
func CertFiles(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	cert, pool := Cert(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// Dial is a TCP connection to addr that has not started a handshake, from the loopback
// address from ("" lets the system choose). The test's cleanup closes it.
func Dial(t testing.TB, from, addr string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Stall starts a handshake on c and stops sending: a record header announcing a 512-byte
// handshake message, then a few bytes of it.
func Stall(t testing.TB, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
}

// Poll checks cond every 10 ms for at most 15 s, and fails the test with what when it never
// holds.
func Poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never happened: %s", what)
}

// ClosedByServer reports whether the server closed c: a read ends in EOF or a reset within
// 10 s, not in the read deadline.
func ClosedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// Gate holds handshake workers (Wait in a Start hook) until Release. A test registers
// t.Cleanup(gate.Release) after starting its listener, so that the gate opens before the
// listener's own cleanup waits for the workers.
type Gate struct {
	ch   chan struct{}
	once sync.Once
}

// NewGate is a closed gate.
func NewGate() *Gate { return &Gate{ch: make(chan struct{})} }

// Wait blocks until the gate is released.
func (g *Gate) Wait() { <-g.ch }

// Release opens the gate; later calls do nothing.
func (g *Gate) Release() { g.once.Do(func() { close(g.ch) }) }

// Concurrency counts the handshakes between Enter and Leave (a Start and an End hook) and
// keeps the most seen at once.
type Concurrency struct {
	cur, most atomic.Int64
}

// Enter counts one more handshake in progress.
func (c *Concurrency) Enter() {
	n := c.cur.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
}

// Leave counts one handshake less.
func (c *Concurrency) Leave() { c.cur.Add(-1) }

// Cur is the handshakes in progress now.
func (c *Concurrency) Cur() int64 { return c.cur.Load() }

// Most is the most handshakes seen in progress at once.
func (c *Concurrency) Most() int64 { return c.most.Load() }

// Metrics reads a listener's series.
type Metrics struct{ *tlsadmit.Metrics }

// Queued is the tls_handshakes_queued gauge.
func (m Metrics) Queued() float64 { return testutil.ToFloat64(m.Metrics.Queued) }

// InProgress is the tls_handshakes_in_progress gauge.
func (m Metrics) InProgress() float64 { return testutil.ToFloat64(m.Metrics.InProgress) }

// Done is tls_handshakes_total.
func (m Metrics) Done() float64 { return testutil.ToFloat64(m.Metrics.Done) }

// Failures is tls_handshake_failures_total{reason}.
func (m Metrics) Failures(reason string) float64 {
	return testutil.ToFloat64(m.Metrics.Failures.WithLabelValues(reason))
}

// Drops is tls_handshake_queue_drops_total{reason}.
func (m Metrics) Drops(reason string) float64 {
	return testutil.ToFloat64(m.Metrics.Drops.WithLabelValues(reason))
}

// CheckSeries gathers reg, fails the test for each of names that is not among its series and
// for each problem promlint finds in it, and returns the help texts by series name.
func CheckSeries(t testing.TB, reg prometheus.Gatherer, names ...string) map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	help := map[string]string{}
	for _, mf := range mfs {
		help[mf.GetName()] = mf.GetHelp()
	}
	for _, n := range names {
		if _, ok := help[n]; !ok {
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
	return help
}
