// Package tlsadmit is TLS handshake admission for a listener: accepted connections wait in a
// bounded FIFO queue for one of a fixed number of workers, which run their handshakes each
// with a deadline counted from the handshake's start. Accept returns only connections whose
// handshake is done, as *tls.Conn.
//
// tls.NewListener instead hands its user a *tls.Conn per accepted socket, and the server runs
// every handshake at once, each on its connection's goroutine (net/http with a deadline from
// accept, sipgo with none). When every client reconnects at the same instant (a gateway
// restart), thousands of handshakes share the CPUs, all progress slowly together, and the
// oldest pass their deadline and are cut after the gateway has spent CPU on them. A Listener:
//
//   - takes connections from the listener below into a FIFO queue, bounded in length (a full
//     queue closes the newcomer: drop "queue_full") and in time (a connection that waits
//     longer than QueueWait is closed: drop "queue_timeout");
//   - runs the handshakes on Concurrency workers, in arrival order, each with a deadline of
//     Timeout counted from when its handshake starts;
//   - hands Accept only connections whose handshake is done (ALPN included), with no deadline
//     left set;
//   - on Close stops accepting, closes the queued connections (drop "shutdown") and aborts
//     the handshakes in progress.
//
// It is used by the HTTPS listener (web) and the SIP TLS listeners (sip); the planes do not
// import each other, so the mechanism lives here.
package tlsadmit

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkersPerCPU sets the default bound on handshakes in progress: this many per GOMAXPROCS.
// A TLS 1.3 handshake costs the gateway a few hundred µs of CPU and then waits one round trip
// for the client's Finished, during which its worker uses no CPU.
// Measured with bench/ws-bench.sh (N=10000 IDLE=5; 10,000 agents reconnecting at the same
// instant over loopback, 2 CPUs shared with the load client and other work, see bench/README.md
// "The storm"), workers per CPU → fill (200 at a time) wall / storm wall, storm p99:
//
//	 4 (8 workers):   12.9 s / 9.4 s, p99 8.8 s  (the fill already queues 0.1-0.5 s per handshake)
//	16 (32 workers):   9.1 s / 7.7 s, p99 7.0 s
//	64 (128 workers):  8.9 s / 8.6 s, p99 6.1 s  (load average 8 during that run)
//
// no failure in any of them (before admission the same storm lost 124 of 10,000 on a busy
// machine). 16 and 64 are the same within the run-to-run noise: once the CPUs are busy, more
// workers only share them more finely, and an admitted handshake still finishes in about
// workers × cost / CPUs (64 per CPU: tens of ms), far from its deadline. A few per CPU is too
// few even on loopback, where scheduling delays keep workers idle; over real networks the
// round trip (50-200 ms) idles a worker far longer than its CPU work, and throughput is
// capped at workers / RTT: 64 per CPU allows 640 handshakes/s per CPU at 100 ms RTT, in the
// range of what a CPU does (the storm costs 700-850 µs of gateway CPU per reconnection,
// handshake, upgrade and REGISTER together). Clients farther away call for a higher
// concurrency: the bound only has to stay far below the thousands of handshakes a storm brings.
const WorkersPerCPU = 64

// QueueDefault is the default queue length: room for a 10,000-client storm with margin. A
// queued connection costs a descriptor, its ClientHello in kernel memory and a small struct
// with a timer (no goroutine).
const QueueDefault = 16384

// Config is the admission's settings.
type Config struct {
	Concurrency int           // handshakes in progress at most
	Queue       int           // connections waiting for a worker at most
	QueueWait   time.Duration // how long one may wait for a worker
	Timeout     time.Duration // one handshake, from its start
}

// WithDefaults fills the zero fields: Concurrency WorkersPerCPU × GOMAXPROCS, Queue
// QueueDefault, QueueWait three handshake timeouts. Timeout has no default: the caller
// derives it from its own settings.
func (c Config) WithDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = WorkersPerCPU * runtime.GOMAXPROCS(0)
	}
	if c.Queue <= 0 {
		c.Queue = QueueDefault
	}
	if c.QueueWait <= 0 {
		c.QueueWait = 3 * c.Timeout
	}
	return c
}

// Metrics are the admission's series, named <namespace>_<subsystem>_tls_handshake(s)_….
type Metrics struct {
	InProgress prometheus.Gauge
	Queued     prometheus.Gauge
	Done       prometheus.Counter
	Failures   *prometheus.CounterVec // by reason
	Drops      *prometheus.CounterVec // by reason
	Wait       prometheus.Histogram
}

// MetricsOpts names a listener's series.
type MetricsOpts struct {
	Namespace, Subsystem string
	// Conns names the listener's connections in the help texts, e.g. "HTTPS".
	Conns string
	// ExtraFailures are failure reasons of the caller's Classify, listed in the help text.
	ExtraFailures []string
}

// NewMetrics builds the series and registers them with reg. Several Listeners may share them
// (the gauges move by increments): a plane's series then cover all its listeners.
func NewMetrics(reg prometheus.Registerer, o MetricsOpts) *Metrics {
	reasons := []string{"timeout", "closed"}
	reasons = append(reasons, o.ExtraFailures...)
	reasons = append(reasons, "protocol", "shutdown")
	m := &Metrics{
		InProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshakes_in_progress",
			Help: fmt.Sprintf("TLS handshakes running on the %s listener's workers.", o.Conns),
		}),
		Queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshakes_queued",
			Help: fmt.Sprintf("Accepted %s connections waiting for a handshake worker.", o.Conns),
		}),
		Done: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshakes_total",
			Help: fmt.Sprintf("TLS handshakes completed on the %s listener.", o.Conns),
		}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshake_failures_total",
			Help: fmt.Sprintf("TLS handshakes that failed, by reason (%s).", strings.Join(reasons, ", ")),
		}, []string{"reason"}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshake_queue_drops_total",
			Help: fmt.Sprintf("%s connections closed before their handshake started, by reason (queue_full, queue_timeout, shutdown).", o.Conns),
		}, []string{"reason"}),
		Wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: o.Namespace, Subsystem: o.Subsystem, Name: "tls_handshake_queue_wait_seconds",
			Help:    "Time from accept to the start of the TLS handshake.",
			Buckets: []float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}),
	}
	reg.MustRegister(m.InProgress, m.Queued, m.Done, m.Failures, m.Drops, m.Wait)
	return m
}

// Hooks let tests watch the workers. Both are called on the worker's goroutine, around the
// handshake.
type Hooks struct {
	Start func(c net.Conn)
	End   func(c net.Conn, err error)
}

// Options are a Listener's collaborators besides its Config.
type Options struct {
	Metrics *Metrics // required
	Hooks   Hooks
	// Classify, when set, names a failed handshake before the built-in reasons (except
	// "shutdown"), or returns "" to leave it to them. It runs before the connection is
	// closed and may write to it (an HTTPS server answers plain HTTP with a 400).
	Classify func(err error, c net.Conn) string
}

// queuedConn is one accepted connection waiting for a worker.
type queuedConn struct {
	conn  net.Conn
	at    time.Time
	elem  *list.Element // in the queue; nil once taken or dropped (under the listener's mu)
	timer *time.Timer
}

// Listener is a net.Listener whose Accept returns handshaken *tls.Conn.
type Listener struct {
	inner net.Listener
	tls   *tls.Config
	cfg   Config
	m     *Metrics
	opts  Options

	ctx       context.Context // cancelled by Close: aborts handshakes in progress
	cancel    context.CancelFunc
	out       chan *tls.Conn // handshaken connections, to Accept
	done      chan struct{}  // closed by Close
	once      sync.Once
	wg        sync.WaitGroup
	acceptErr atomic.Pointer[error] // the listener below failed for good

	mu     sync.Mutex
	cond   *sync.Cond // a connection was queued, or the listener closed
	queue  list.List  // *queuedConn, oldest first
	closed bool
}

// NewListener starts admitting inner's connections at once: its accept loop and workers run
// until Close. cfg's zero fields take their defaults (WithDefaults); cfg.Timeout must be set.
func NewListener(inner net.Listener, tlsConf *tls.Config, cfg Config, o Options) *Listener {
	cfg = cfg.WithDefaults()
	l := &Listener{inner: inner, tls: tlsConf, cfg: cfg, m: o.Metrics, opts: o,
		out: make(chan *tls.Conn), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1 + cfg.Concurrency)
	go l.acceptLoop()
	for range cfg.Concurrency {
		go l.worker()
	}
	return l
}

// Config returns the resolved settings.
func (l *Listener) Config() Config { return l.cfg }

// Accept returns the next connection whose handshake is done, a *tls.Conn.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.done:
		if err := l.acceptErr.Load(); err != nil {
			return nil, *err
		}
		return nil, net.ErrClosed
	}
}

// Addr is the listener below's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, closes every queued connection and aborts the handshakes in
// progress, and returns once the workers have stopped.
func (l *Listener) Close() error {
	err := l.inner.Close()
	l.shut()
	l.wg.Wait()
	return err
}

// shut marks the listener closed and drops what waits; the accept loop and the workers see it.
func (l *Listener) shut() {
	l.once.Do(func() {
		l.cancel()
		l.mu.Lock()
		l.closed = true
		var drop []*queuedConn
		for e := l.queue.Front(); e != nil; e = e.Next() {
			q := e.Value.(*queuedConn)
			q.elem = nil
			q.timer.Stop()
			drop = append(drop, q)
		}
		l.queue.Init()
		l.m.Queued.Sub(float64(len(drop)))
		l.cond.Broadcast()
		l.mu.Unlock()
		for _, q := range drop { // counted before the close, so whoever sees the close sees the count
			l.m.Drops.WithLabelValues("shutdown").Inc()
			_ = q.conn.Close()
		}
		close(l.done)
	})
}

// acceptLoop moves connections from the listener below into the queue.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.shut()
				return
			}
			if retryableAccept(err) { // as net/http does: back off, up to a second
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.acceptErr.Store(&err)
			l.shut()
			return
		}
		backoff = 0
		l.enqueue(c)
	}
}

func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR)
}

func (l *Listener) enqueue(c net.Conn) {
	q := &queuedConn{conn: c, at: time.Now()}
	l.mu.Lock()
	if l.closed || l.queue.Len() >= l.cfg.Queue {
		closed := l.closed
		l.mu.Unlock()
		if closed {
			l.m.Drops.WithLabelValues("shutdown").Inc()
		} else {
			l.m.Drops.WithLabelValues("queue_full").Inc()
		}
		_ = c.Close()
		return
	}
	q.elem = l.queue.PushBack(q)
	q.timer = time.AfterFunc(l.cfg.QueueWait, func() { l.expire(q) })
	l.m.Queued.Inc()
	l.cond.Signal()
	l.mu.Unlock()
}

// expire drops q if it is still waiting.
func (l *Listener) expire(q *queuedConn) {
	l.mu.Lock()
	if q.elem == nil {
		l.mu.Unlock()
		return
	}
	l.queue.Remove(q.elem)
	q.elem = nil
	l.m.Queued.Dec()
	l.mu.Unlock()
	l.m.Drops.WithLabelValues("queue_timeout").Inc()
	_ = q.conn.Close()
}

// next takes the oldest waiting connection, blocking until there is one; nil once closed.
func (l *Listener) next() *queuedConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.queue.Len() == 0 && !l.closed {
		l.cond.Wait()
	}
	if l.closed {
		return nil
	}
	q := l.queue.Remove(l.queue.Front()).(*queuedConn)
	q.elem = nil
	q.timer.Stop() // if it fired, expire finds elem nil and leaves q alone
	l.m.Queued.Dec()
	return q
}

func (l *Listener) worker() {
	defer l.wg.Done()
	for {
		q := l.next()
		if q == nil {
			return
		}
		tc, ok := l.handshake(q)
		if !ok {
			continue
		}
		select {
		case l.out <- tc:
		case <-l.done:
			_ = tc.Close()
		}
	}
}

// handshake runs q's handshake with its own deadline; on failure the connection is closed.
func (l *Listener) handshake(q *queuedConn) (*tls.Conn, bool) {
	l.m.InProgress.Inc()
	if l.opts.Hooks.Start != nil {
		l.opts.Hooks.Start(q.conn)
	}
	start := time.Now()
	l.m.Wait.Observe(start.Sub(q.at).Seconds())
	tc := tls.Server(q.conn, l.tls)
	_ = q.conn.SetDeadline(start.Add(l.cfg.Timeout))
	err := tc.HandshakeContext(l.ctx)
	if err == nil {
		err = q.conn.SetDeadline(time.Time{}) // the server sets its own from here on
	}
	if l.opts.Hooks.End != nil {
		l.opts.Hooks.End(q.conn, err)
	}
	l.m.InProgress.Dec()
	if err != nil {
		l.m.Failures.WithLabelValues(l.failureReason(err, q.conn)).Inc()
		_ = tc.Close()
		return nil, false
	}
	l.m.Done.Inc()
	return tc, true
}

// failureReason names a failed handshake for the metric.
func (l *Listener) failureReason(err error, c net.Conn) string {
	if l.ctx.Err() != nil {
		return "shutdown"
	}
	if l.opts.Classify != nil {
		if r := l.opts.Classify(err, c); r != "" {
			return r
		}
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return "closed"
	default:
		return "protocol"
	}
}
