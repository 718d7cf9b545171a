package tlsadmit_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dualgate/dualgate/internal/tlsadmit"
	"github.com/dualgate/dualgate/internal/tlsadmit/tlsadmittest"
)

// fixture is a Listener over a loopback TCP listener with a self-signed certificate. Its
// server accepts in a loop and, on each connection, reads one line and answers it with the
// negotiated protocol and the line.
type fixture struct {
	l    *tlsadmit.Listener
	addr string
	pool *x509.CertPool
	reg  *prometheus.Registry
	m    tlsadmittest.Metrics
}

// start starts a Listener with cfg and o (o.Metrics, when nil, namespaced test_admit_…); the
// test's cleanup closes it and waits for its server.
func start(t *testing.T, cfg tlsadmit.Config, o tlsadmit.Options) *fixture {
	t.Helper()
	cert, pool := tlsadmittest.Cert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if o.Metrics == nil {
		o.Metrics = tlsadmit.NewMetrics(reg, tlsadmit.MetricsOpts{Namespace: "test", Subsystem: "admit", Conns: "test"})
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x-one", "x-two"}}
	l := tlsadmit.NewListener(ln, conf, cfg, o)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("accept: %v", err)
				}
				return
			}
			wg.Go(func() { serve(t, c) })
		}
	})
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) { // a test may have closed it
			t.Errorf("close: %v", err)
		}
		wg.Wait()
	})
	return &fixture{l: l, addr: ln.Addr().String(), pool: pool, reg: reg, m: tlsadmittest.Metrics{Metrics: o.Metrics}}
}

// serve checks that c is a *tls.Conn whose handshake is done, then answers one line with
// "<ALPN protocol> <line>".
func serve(t *testing.T, c net.Conn) {
	defer c.Close()
	tc, ok := c.(*tls.Conn)
	if !ok {
		t.Errorf("Accept returned a %T, want a *tls.Conn", c)
		return
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete {
		t.Error("Accept returned a connection whose handshake is not done")
		return
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return // the client gave up; the client side of the test says why
	}
	_, _ = io.WriteString(tc, st.NegotiatedProtocol+" "+line)
}

// exchange handshakes on raw offering protos, sends one line and returns the answer.
func (f *fixture) exchange(raw net.Conn, protos []string, pause time.Duration) (string, error) {
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1", NextProtos: protos})
	if err := c.Handshake(); err != nil {
		return "", fmt.Errorf("handshake: %w", err)
	}
	time.Sleep(pause)
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestAcceptReturnsHandshakenConns: Accept hands over a *tls.Conn whose handshake is done, ALPN
// negotiated, with no deadline left set (the client speaks after more than a handshake
// timeout); the zero Config fields take their defaults.
func TestAcceptReturnsHandshakenConns(t *testing.T) {
	const timeout = 300 * time.Millisecond
	f := start(t, tlsadmit.Config{Timeout: timeout}, tlsadmit.Options{})
	line, err := f.exchange(tlsadmittest.Dial(t, "", f.addr), []string{"x-two"}, 2*timeout)
	if err != nil || line != "x-two hi" {
		t.Errorf("answer %q, %v; want %q", line, err, "x-two hi")
	}
	if n := f.m.Done(); n != 1 {
		t.Errorf("handshakes_total %v, want 1", n)
	}
	want := tlsadmit.Config{Concurrency: tlsadmit.WorkersPerCPU * runtime.GOMAXPROCS(0), Queue: tlsadmit.QueueDefault,
		QueueWait: 3 * timeout, Timeout: timeout}
	if got := f.l.Config(); got != want {
		t.Errorf("resolved config %+v, want %+v", got, want)
	}
	set := tlsadmit.Config{Concurrency: 3, Queue: 7, QueueWait: time.Minute, Timeout: time.Second}
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v, want %+v", got, set)
	}
}

// TestConcurrencyIsBounded: 40 clients at once are all served, with never more than the
// configured number of handshakes in progress. The workers are held at the start of their
// handshake until every other connection is queued, so the bound is reached and tested
// whatever the machine's speed.
func TestConcurrencyIsBounded(t *testing.T) {
	const workers, clients = 4, 40
	var cc tlsadmittest.Concurrency
	gate := tlsadmittest.NewGate()
	f := start(t, tlsadmit.Config{Concurrency: workers, Timeout: 20 * time.Second}, tlsadmit.Options{Hooks: tlsadmit.Hooks{
		Start: func(net.Conn) { cc.Enter(); gate.Wait() },
		End:   func(net.Conn, error) { cc.Leave() },
	}})
	t.Cleanup(gate.Release) // runs before the listener's close

	var raws []net.Conn
	for range clients {
		raws = append(raws, tlsadmittest.Dial(t, "", f.addr))
	}
	tlsadmittest.Poll(t, "every worker busy and the other connections queued", func() bool {
		return cc.Cur() == workers && f.m.Queued() == clients-workers
	})
	if g := f.m.InProgress(); g != workers {
		t.Errorf("in-progress gauge %v, want %d", g, workers)
	}
	var wg sync.WaitGroup
	for _, raw := range raws {
		wg.Go(func() {
			if line, err := f.exchange(raw, []string{"x-one"}, 0); err != nil || line != "x-one hi" {
				t.Errorf("client: %q, %v", line, err)
			}
		})
	}
	gate.Release()
	wg.Wait()
	if m := cc.Most(); m != workers {
		t.Errorf("at most %d handshakes in progress at once, want exactly the bound %d", m, workers)
	}
	if n := f.m.Done(); n != clients {
		t.Errorf("handshakes_total %v, want %d", n, clients)
	}
	if n := testutil.CollectAndCount(f.m.Wait); n != 1 {
		t.Errorf("queue wait histogram: %d series, want 1", n)
	}
	if f.m.Queued() != 0 || f.m.InProgress() != 0 {
		t.Errorf("after the flood: queued %v, in progress %v, want 0 and 0", f.m.Queued(), f.m.InProgress())
	}
}

// TestHandshakesInArrivalOrder: with one worker, queued connections are handshaken in the
// order they were accepted.
func TestHandshakesInArrivalOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	gate := tlsadmittest.NewGate()
	f := start(t, tlsadmit.Config{Concurrency: 1, Timeout: 20 * time.Second}, tlsadmit.Options{Hooks: tlsadmit.Hooks{
		Start: func(c net.Conn) {
			mu.Lock()
			order = append(order, c.RemoteAddr().String())
			first := len(order) == 1
			mu.Unlock()
			if first {
				gate.Wait()
			}
		},
	}})
	t.Cleanup(gate.Release)

	blocker := tlsadmittest.Dial(t, "", f.addr)
	tlsadmittest.Poll(t, "the first connection in its handshake", func() bool { return f.m.InProgress() == 1 })
	var want []string
	var raws []net.Conn
	for i := range 6 {
		c := tlsadmittest.Dial(t, "", f.addr)
		want = append(want, c.LocalAddr().String())
		raws = append(raws, c)
		tlsadmittest.Poll(t, "the connection queued", func() bool { return f.m.Queued() == float64(i+1) })
	}
	blocker.Close()
	gate.Release()
	var wg sync.WaitGroup
	for _, raw := range raws {
		wg.Go(func() {
			if _, err := f.exchange(raw, nil, 0); err != nil {
				t.Errorf("client: %v", err)
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

// TestDeadlineFromHandshakeStart: with one worker, two clients that stall mid-handshake hold
// it for one handshake timeout each, counted from each one's start; the clients queued behind
// them are then served, although they waited longer than one timeout.
func TestDeadlineFromHandshakeStart(t *testing.T) {
	const timeout = time.Second
	type end struct {
		remote string
		err    error
		took   time.Duration
	}
	var mu sync.Mutex
	starts := map[string]time.Time{}
	var ends []end
	f := start(t, tlsadmit.Config{Concurrency: 1, QueueWait: 30 * time.Second, Timeout: timeout}, tlsadmit.Options{Hooks: tlsadmit.Hooks{
		Start: func(c net.Conn) {
			mu.Lock()
			starts[c.RemoteAddr().String()] = time.Now()
			mu.Unlock()
		},
		End: func(c net.Conn, err error) {
			mu.Lock()
			r := c.RemoteAddr().String()
			ends = append(ends, end{r, err, time.Since(starts[r])})
			mu.Unlock()
		},
	}})

	a := tlsadmittest.Dial(t, "", f.addr)
	tlsadmittest.Stall(t, a)
	tlsadmittest.Poll(t, "the first staller in its handshake", func() bool { return f.m.InProgress() == 1 })
	b := tlsadmittest.Dial(t, "", f.addr)
	tlsadmittest.Stall(t, b)
	tlsadmittest.Poll(t, "the second staller queued", func() bool { return f.m.Queued() == 1 })

	const clients = 5
	dialed := map[string]time.Time{}
	var raws []net.Conn
	for range clients {
		c := tlsadmittest.Dial(t, "", f.addr)
		dialed[c.LocalAddr().String()] = time.Now()
		raws = append(raws, c)
	}
	var wg sync.WaitGroup
	for _, raw := range raws {
		wg.Go(func() {
			if line, err := f.exchange(raw, []string{"x-one"}, 0); err != nil || line != "x-one hi" {
				t.Errorf("client behind the stallers: %q, %v", line, err)
			}
		})
	}
	wg.Wait()
	for _, c := range []net.Conn{a, b} {
		if !tlsadmittest.ClosedByServer(c) {
			t.Error("a stalled handshake was not closed at its deadline")
		}
	}
	if n, d := f.m.Failures("timeout"), f.m.Drops("queue_timeout"); n != 2 || d != 0 {
		t.Errorf("failures{timeout} %v, drops{queue_timeout} %v; want 2 and 0", n, d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ends) != 2+clients {
		t.Fatalf("%d handshakes ended, want %d", len(ends), 2+clients)
	}
	for i, e := range ends {
		staller := i < 2
		if want := []string{a.LocalAddr().String(), b.LocalAddr().String()}; staller && e.remote != want[i] {
			t.Errorf("handshake %d was %s's, want staller %s's", i, e.remote, want[i])
		}
		if staller != (e.err != nil) {
			t.Errorf("handshake %d ended with %v; want the two stallers first, failed, and the rest done", i, e.err)
		}
		if staller && e.took < timeout {
			t.Errorf("staller %d cut %v after its handshake started, before its %v deadline", i, e.took, timeout)
		}
		if !staller {
			if waited := starts[e.remote].Sub(dialed[e.remote]); waited <= timeout {
				t.Errorf("client %s waited %v for a worker, the test wants more than one timeout (%v)", e.remote, waited, timeout)
			}
		}
	}
}

// TestQueueLimits: a connection arriving at a full queue is closed (drop queue_full) and one
// that waits longer than QueueWait is closed (drop queue_timeout); neither reaches a worker.
func TestQueueLimits(t *testing.T) {
	// held starts a Listener whose workers wait at the start of each handshake until the
	// test ends.
	held := func(cfg tlsadmit.Config) *fixture {
		gate := tlsadmittest.NewGate()
		f := start(t, cfg, tlsadmit.Options{Hooks: tlsadmit.Hooks{Start: func(net.Conn) { gate.Wait() }}})
		t.Cleanup(gate.Release)
		return f
	}
	f := held(tlsadmit.Config{Concurrency: 1, Queue: 2, QueueWait: time.Minute, Timeout: time.Minute})
	tlsadmittest.Dial(t, "", f.addr) // the worker holds it
	tlsadmittest.Poll(t, "the worker busy", func() bool { return f.m.InProgress() == 1 })
	for i := range 2 {
		tlsadmittest.Dial(t, "", f.addr)
		tlsadmittest.Poll(t, "queued", func() bool { return f.m.Queued() == float64(i+1) })
	}
	if full := tlsadmittest.Dial(t, "", f.addr); !tlsadmittest.ClosedByServer(full) {
		t.Error("a connection arriving at a full queue was not closed")
	}
	if f.m.Drops("queue_full") != 1 || f.m.Queued() != 2 || f.m.InProgress() != 1 {
		t.Errorf("queue_full drops %v, queued %v, in progress %v; want 1, 2, 1", f.m.Drops("queue_full"), f.m.Queued(), f.m.InProgress())
	}

	short := held(tlsadmit.Config{Concurrency: 1, QueueWait: 200 * time.Millisecond, Timeout: time.Minute})
	tlsadmittest.Dial(t, "", short.addr)
	tlsadmittest.Poll(t, "the worker busy", func() bool { return short.m.InProgress() == 1 })
	if late := tlsadmittest.Dial(t, "", short.addr); !tlsadmittest.ClosedByServer(late) {
		t.Error("a connection past QueueWait was not closed")
	}
	if short.m.Drops("queue_timeout") != 1 || short.m.Queued() != 0 || short.m.Drops("queue_full") != 0 {
		t.Errorf("queue_timeout drops %v, queued %v, queue_full drops %v; want 1, 0, 0",
			short.m.Drops("queue_timeout"), short.m.Queued(), short.m.Drops("queue_full"))
	}
}

// TestCloseDropsQueuedAndAbortsHandshakes: Close closes the connections waiting for a worker
// (drop shutdown) and aborts the handshake in progress (failure shutdown, before Classify)
// without waiting for its deadline; Accept then reports net.ErrClosed.
func TestCloseDropsQueuedAndAbortsHandshakes(t *testing.T) {
	f := start(t, tlsadmit.Config{Concurrency: 1, QueueWait: time.Minute, Timeout: time.Minute}, tlsadmit.Options{
		Classify: func(error, net.Conn) string { return "classified" },
	})
	staller := tlsadmittest.Dial(t, "", f.addr)
	tlsadmittest.Stall(t, staller)
	tlsadmittest.Poll(t, "the staller in its handshake", func() bool { return f.m.InProgress() == 1 })
	var queued []net.Conn
	for i := range 3 {
		queued = append(queued, tlsadmittest.Dial(t, "", f.addr))
		tlsadmittest.Poll(t, "queued", func() bool { return f.m.Queued() == float64(i+1) })
	}
	closed := make(chan error, 1)
	go func() { closed <- f.l.Close() }() // with the handshake not aborted it would return after a minute
	for _, c := range append(queued, staller) {
		if !tlsadmittest.ClosedByServer(c) {
			t.Error("a connection was left open by Close")
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	if f.m.Drops("shutdown") != 3 || f.m.Failures("shutdown") != 1 || f.m.Failures("classified") != 0 ||
		f.m.Queued() != 0 || f.m.InProgress() != 0 {
		t.Errorf("after close: drops{shutdown} %v, failures{shutdown} %v, failures{classified} %v, queued %v, in progress %v; want 3, 1, 0, 0, 0",
			f.m.Drops("shutdown"), f.m.Failures("shutdown"), f.m.Failures("classified"), f.m.Queued(), f.m.InProgress())
	}
	if _, err := f.l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// TestClassify: Classify names a failed handshake and may answer on the connection before it
// is closed; when it returns "", the built-in reasons apply.
func TestClassify(t *testing.T) {
	f := start(t, tlsadmit.Config{Concurrency: 1, Timeout: 10 * time.Second}, tlsadmit.Options{
		Classify: func(err error, c net.Conn) string {
			var rh tls.RecordHeaderError
			if errors.As(err, &rh) && string(rh.RecordHeader[:]) == "PING " {
				_, _ = io.WriteString(c, "PONG\n")
				return "ping"
			}
			return ""
		},
	})
	ping := tlsadmittest.Dial(t, "", f.addr)
	if _, err := io.WriteString(ping, "PING PING PING\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = ping.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(ping); string(b) != "PONG\n" || err != nil {
		t.Errorf("Classify's answer: %q, %v; want %q and EOF", b, err, "PONG\n")
	}
	garbage := tlsadmittest.Dial(t, "", f.addr)
	if _, err := io.WriteString(garbage, "GARBAGE GARBAGE\r\n"); err != nil {
		t.Fatal(err)
	}
	if !tlsadmittest.ClosedByServer(garbage) {
		t.Error("a connection that sent garbage was not closed")
	}
	tlsadmittest.Dial(t, "", f.addr).Close()
	tlsadmittest.Poll(t, "three failures", func() bool {
		return f.m.Failures("ping")+f.m.Failures("protocol")+f.m.Failures("closed") == 3
	})
	if p, g, c := f.m.Failures("ping"), f.m.Failures("protocol"), f.m.Failures("closed"); p != 1 || g != 1 || c != 1 {
		t.Errorf("failures: ping %v, protocol %v, closed %v; want 1, 1, 1", p, g, c)
	}
}

// TestMetricsNames: the series are named <namespace>_<subsystem>_tls_handshake(s)_…, their
// help texts name the connections and the extra failure reasons, and promlint finds nothing
// (CheckSeries).
func TestMetricsNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := tlsadmit.NewMetrics(reg, tlsadmit.MetricsOpts{Namespace: "ns", Subsystem: "sub", Conns: "FOO", ExtraFailures: []string{"odd_one"}})
	f := start(t, tlsadmit.Config{Timeout: 10 * time.Second}, tlsadmit.Options{Metrics: m})
	if line, err := f.exchange(tlsadmittest.Dial(t, "", f.addr), nil, 0); err != nil {
		t.Fatalf("client: %q, %v", line, err)
	}
	m.Failures.WithLabelValues("timeout")
	m.Drops.WithLabelValues("queue_full")
	help := tlsadmittest.CheckSeries(t, reg, "ns_sub_tls_handshakes_in_progress", "ns_sub_tls_handshakes_queued",
		"ns_sub_tls_handshakes_total", "ns_sub_tls_handshake_failures_total", "ns_sub_tls_handshake_queue_drops_total",
		"ns_sub_tls_handshake_queue_wait_seconds")
	if len(help) != 6 {
		t.Errorf("%d series, want 6: %v", len(help), help)
	}
	if h := help["ns_sub_tls_handshakes_in_progress"]; !strings.Contains(h, "FOO") {
		t.Errorf("in-progress help %q does not name the connections", h)
	}
	if h := help["ns_sub_tls_handshake_failures_total"]; !strings.Contains(h, "closed, odd_one, protocol") {
		t.Errorf("failures help %q does not list the extra reason among the built-in ones", h)
	}
}
