package web

import (
	"bytes"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientIPs works out who a request comes from. X-Forwarded-For is believed only from trusted
// proxies, and then read from the right: the first address that is not itself a trusted proxy
// is the client (the left part of the header is whatever the client chose to send).
type clientIPs struct {
	trusted []netip.Prefix
}

func (c clientIPs) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c clientIPs) of(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsValid() || !c.isTrusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer // a malformed chain proves nothing: fall back to the proxy itself
		}
		a = a.Unmap()
		if !c.isTrusted(a) {
			return a
		}
	}
	return peer
}

func remoteAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ipLimiter keeps one token bucket per client IP, forgetting idle ones so a scan over many
// addresses cannot grow it without bound.
type ipLimiter struct {
	limit rate.Limit
	burst int
	name  string // metric label

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(name string, perSecond float64, burst int) *ipLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &ipLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), name: name, buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token for ip; when there is none it says how long until there will be.
func (l *ipLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	b := l.buckets[ip]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	l.mu.Unlock()
	if b.lim.AllowN(now, 1) { // the common case, without ReserveN's allocation
		return true, 0
	}
	res := b.lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets clients idle for longer than idle; run it now and then.
func (l *ipLimiter) sweep(now time.Time, idle time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, b := range l.buckets {
		if now.Sub(b.seen) > idle {
			delete(l.buckets, ip)
		}
	}
}

// limitMiddleware answers 429 with Retry-After when the client's bucket is empty.
func (s *Server) limitMiddleware(l *ipLimiter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, wait := l.allow(ClientIP(r), time.Now())
			if !ok {
				s.m.limited.WithLabelValues(l.name).Inc()
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				writeJSONError(w, http.StatusTooManyRequests, "rate limit exceeded")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// connLimitListener caps concurrent connections per peer IP, below TLS, so a client cannot
// hold every socket open. Trusted proxies are exempt: they carry many clients.
type connLimitListener struct {
	net.Listener
	max     int
	ips     clientIPs
	plain   bool // whether a plain-HTTP 429 can be written before closing
	onLimit func()

	mu    sync.Mutex
	count map[netip.Addr]int
}

func newConnLimitListener(l net.Listener, maxPerIP int, ips clientIPs, plain bool, onLimit func()) net.Listener {
	if maxPerIP <= 0 {
		return l
	}
	return &connLimitListener{Listener: l, max: maxPerIP, ips: ips, plain: plain, onLimit: onLimit, count: map[netip.Addr]int{}}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteAddr(c.RemoteAddr().String())
		if l.ips.isTrusted(ip) {
			return c, nil
		}
		l.mu.Lock()
		if l.count[ip] >= l.max {
			l.mu.Unlock()
			l.onLimit()
			if l.plain {
				go refuse(c) // never hold up Accept for a client we are turning away
			} else {
				_ = c.Close()
			}
			continue
		}
		l.count[ip]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

// refuse answers one request on a connection over the cap with 429 and closes it. The request
// head is read first: an answer sent before the request is, to an HTTP client, an unsolicited
// response, not a 429.
func refuse(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	var head []byte
	for len(head) < len(buf) && !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := c.Read(buf[:len(buf)-len(head)])
		head = append(head, buf[:n]...)
		if err != nil {
			return
		}
	}
	_, _ = c.Write([]byte("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
}

func (l *connLimitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[ip]--; l.count[ip] <= 0 {
		delete(l.count, ip)
	}
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
