package web

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLS handshake admission (issue 5).
//
// tls.NewListener hands net/http a *tls.Conn per accepted socket and net/http runs every
// handshake at once, each on its connection's goroutine, with a deadline counted from accept.
// When every browser reconnects at the same instant (a gateway restart), thousands of
// handshakes share the CPUs, all progress slowly together, and the oldest pass the deadline
// and are cut after the gateway has spent CPU on them. handshakeListener instead:
//
//   - takes connections from the listener below (after the per-IP connection cap) into a
//     FIFO queue, bounded in length (a full queue closes the newcomer: drop "queue_full")
//     and in time (a connection that waits longer than queueWait is closed:
//     drop "queue_timeout");
//   - runs the handshakes on a fixed number of workers, in arrival order, each with a deadline
//     counted from when its handshake starts;
//   - hands net/http only connections whose handshake is done, so net/http's own
//     HandshakeContext is a no-op (ALPN, h2 included, is already negotiated);
//   - on Close (the server's Shutdown) stops accepting, closes the queued connections
//     (drop "shutdown") and aborts the handshakes in progress.

// handshakeWorkersPerCPU sets the default bound on handshakes in progress: this many per
// GOMAXPROCS. A TLS 1.3 handshake costs the gateway a few hundred µs of CPU and then waits
// one round trip for the client's Finished, during which its worker uses no CPU.
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
// http.tls_handshakes.concurrency: the bound only has to stay far below the thousands of
// handshakes a storm brings.
const handshakeWorkersPerCPU = 64

// handshakeQueueDefault is the default queue length: room for the 10,000-agent storm of
// issue 5 with margin. A queued connection costs a descriptor, its ClientHello in kernel
// memory and a small struct with a timer (no goroutine).
const handshakeQueueDefault = 16384

// handshakeConfig is the admission's resolved settings.
type handshakeConfig struct {
	workers   int           // handshakes in progress at most
	queue     int           // connections waiting for a worker at most
	queueWait time.Duration // how long one may wait for a worker
	timeout   time.Duration // one handshake, from its start
}

// resolveHandshakes fills the defaults of c from the server's timeouts: a handshake gets
// net/http's own handshake budget, min(read_header, read, write), now from its start instead
// of from accept; a connection may wait three of those for a worker. Browsers give a whole
// WebSocket opening (TCP, TLS, upgrade) 20 s (Firefox's network.websocket.timeout.open) or
// more, so with the 5 s default a connection that waited 15 s and then handshakes still has
// a chance, and one that waited longer would mostly have been given up by its client.
func resolveHandshakes(c HandshakeConfig, t TimeoutConfig) handshakeConfig {
	hc := handshakeConfig{workers: c.Concurrency, queue: c.Queue, queueWait: c.QueueWait,
		timeout: min(t.ReadHeader, t.Read, t.Write)}
	if hc.workers <= 0 {
		hc.workers = handshakeWorkersPerCPU * runtime.GOMAXPROCS(0)
	}
	if hc.queue <= 0 {
		hc.queue = handshakeQueueDefault
	}
	if hc.queueWait <= 0 {
		hc.queueWait = 3 * hc.timeout
	}
	return hc
}

// handshakeMetrics are the admission's series (gateway_http_tls_*).
type handshakeMetrics struct {
	inProgress prometheus.Gauge
	queued     prometheus.Gauge
	done       prometheus.Counter
	failures   *prometheus.CounterVec
	drops      *prometheus.CounterVec
	wait       prometheus.Histogram
}

func newHandshakeMetrics(reg prometheus.Registerer) *handshakeMetrics {
	m := &handshakeMetrics{
		inProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshakes_in_progress",
			Help: "TLS handshakes running on the HTTPS listener's workers.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshakes_queued",
			Help: "Accepted HTTPS connections waiting for a handshake worker.",
		}),
		done: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshakes_total",
			Help: "TLS handshakes completed on the HTTPS listener.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshake_failures_total",
			Help: "TLS handshakes that failed, by reason (timeout, closed, plain_http, protocol, shutdown).",
		}, []string{"reason"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshake_queue_drops_total",
			Help: "HTTPS connections closed before their handshake started, by reason (queue_full, queue_timeout, shutdown).",
		}, []string{"reason"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "gateway", Subsystem: "http", Name: "tls_handshake_queue_wait_seconds",
			Help:    "Time from accept to the start of the TLS handshake.",
			Buckets: []float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}),
	}
	reg.MustRegister(m.inProgress, m.queued, m.done, m.failures, m.drops, m.wait)
	return m
}

// handshakeHooks let tests watch the workers. Both are called on the worker's goroutine,
// around the handshake.
type handshakeHooks struct {
	start func(c net.Conn)
	end   func(c net.Conn, err error)
}

// queuedConn is one accepted connection waiting for a worker.
type queuedConn struct {
	conn  net.Conn
	at    time.Time
	elem  *list.Element // in the queue; nil once taken or dropped (under the listener's mu)
	timer *time.Timer
}

type handshakeListener struct {
	inner net.Listener
	cfg   *tls.Config
	hc    handshakeConfig
	m     *handshakeMetrics
	hooks handshakeHooks

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

func newHandshakeListener(inner net.Listener, cfg *tls.Config, hc handshakeConfig, m *handshakeMetrics, hooks handshakeHooks) *handshakeListener {
	l := &handshakeListener{inner: inner, cfg: cfg, hc: hc, m: m, hooks: hooks,
		out: make(chan *tls.Conn), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1 + hc.workers)
	go l.acceptLoop()
	for range hc.workers {
		go l.worker()
	}
	return l
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
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

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, closes every queued connection and aborts the handshakes in
// progress, and returns once the workers have stopped.
func (l *handshakeListener) Close() error {
	err := l.inner.Close()
	l.shut()
	l.wg.Wait()
	return err
}

// shut marks the listener closed and drops what waits; the accept loop and the workers see it.
func (l *handshakeListener) shut() {
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
		l.m.queued.Set(0)
		l.cond.Broadcast()
		l.mu.Unlock()
		for _, q := range drop { // counted before the close, so whoever sees the close sees the count
			l.m.drops.WithLabelValues("shutdown").Inc()
			_ = q.conn.Close()
		}
		close(l.done)
	})
}

// acceptLoop moves connections from the listener below into the queue.
func (l *handshakeListener) acceptLoop() {
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

func (l *handshakeListener) enqueue(c net.Conn) {
	q := &queuedConn{conn: c, at: time.Now()}
	l.mu.Lock()
	if l.closed || l.queue.Len() >= l.hc.queue {
		closed := l.closed
		l.mu.Unlock()
		if closed {
			l.m.drops.WithLabelValues("shutdown").Inc()
		} else {
			l.m.drops.WithLabelValues("queue_full").Inc()
		}
		_ = c.Close()
		return
	}
	q.elem = l.queue.PushBack(q)
	q.timer = time.AfterFunc(l.hc.queueWait, func() { l.expire(q) })
	l.m.queued.Set(float64(l.queue.Len()))
	l.cond.Signal()
	l.mu.Unlock()
}

// expire drops q if it is still waiting.
func (l *handshakeListener) expire(q *queuedConn) {
	l.mu.Lock()
	if q.elem == nil {
		l.mu.Unlock()
		return
	}
	l.queue.Remove(q.elem)
	q.elem = nil
	l.m.queued.Set(float64(l.queue.Len()))
	l.mu.Unlock()
	l.m.drops.WithLabelValues("queue_timeout").Inc()
	_ = q.conn.Close()
}

// next takes the oldest waiting connection, blocking until there is one; nil once closed.
func (l *handshakeListener) next() *queuedConn {
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
	l.m.queued.Set(float64(l.queue.Len()))
	return q
}

func (l *handshakeListener) worker() {
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
func (l *handshakeListener) handshake(q *queuedConn) (*tls.Conn, bool) {
	l.m.inProgress.Inc()
	if l.hooks.start != nil {
		l.hooks.start(q.conn)
	}
	start := time.Now()
	l.m.wait.Observe(start.Sub(q.at).Seconds())
	tc := tls.Server(q.conn, l.cfg)
	_ = q.conn.SetDeadline(start.Add(l.hc.timeout))
	err := tc.HandshakeContext(l.ctx)
	if err == nil {
		err = q.conn.SetDeadline(time.Time{}) // net/http sets its own from here on
	}
	if l.hooks.end != nil {
		l.hooks.end(q.conn, err)
	}
	l.m.inProgress.Dec()
	if err != nil {
		l.m.failures.WithLabelValues(l.failureReason(err, q.conn)).Inc()
		_ = tc.Close()
		return nil, false
	}
	l.m.done.Inc()
	return tc, true
}

// failureReason names a failed handshake for the metric. A client speaking plain HTTP gets
// the 400 net/http would have written had it run the handshake.
func (l *handshakeListener) failureReason(err error, c net.Conn) string {
	var rh tls.RecordHeaderError
	switch {
	case l.ctx.Err() != nil:
		return "shutdown"
	case errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader):
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		return "plain_http"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return "closed"
	default:
		return "protocol"
	}
}

// looksLikeHTTP is net/http's test for a plain HTTP request on a TLS port.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
