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
//
// It also says which address class a client is in (class): the one classification every
// per-IP limit of the plane uses.
type clientIPs struct {
	trusted []netip.Prefix
	classes []limitClass // [0] is the default class; never empty once built by newClientIPs
}

func newClientIPs(trusted []netip.Prefix, rl RateLimitConfig) clientIPs {
	return clientIPs{trusted: trusted, classes: newLimitClasses(rl)}
}

// limitClass is one address class with its resolved limits. Index 0 is the default class
// (http.rate_limit itself: every address in no network); then http.rate_limit.networks, in
// the order of the file.
type limitClass struct {
	name     string // the refusal metric's class label
	prefixes []netip.Prefix
	limits   RateLimitConfig
}

func newLimitClasses(rl RateLimitConfig) []limitClass {
	base := rl
	base.Networks = nil
	out := []limitClass{{name: defaultClass, limits: base}}
	for _, n := range rl.Networks {
		p, _ := parsePrefixes(n.CIDRs) // validated
		out = append(out, limitClass{name: n.Name, prefixes: p, limits: n.resolve(rl)})
	}
	return out
}

// class is the index in c.classes of the class of client address a: the network holding it,
// else 0, the default. Networks do not overlap (Validate), so their order does not matter.
// Every per-IP limit classifies through here: the request limits (all, login, refresh, ws)
// by the client IP of the trusted-proxy rules, and the connection cap (below the TLS
// handshake admission and the fast lane) and the fast lane's request limit by the peer.
func (c clientIPs) class(a netip.Addr) int {
	for i := 1; i < len(c.classes); i++ {
		for _, p := range c.classes[i].prefixes {
			if p.Contains(a) {
				return i
			}
		}
	}
	return 0
}

// className is the metric label of class i.
func (c clientIPs) className(i int) string {
	if i <= 0 || i >= len(c.classes) {
		return defaultClass
	}
	return c.classes[i].name
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
// addresses cannot grow it without bound. Each address class has its own bucket shape; an
// address's class never changes while the server runs, so neither does its bucket's.
type ipLimiter struct {
	shapes []bucketShape // by class index
	name   string        // metric label

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

// bucketShape is one class's rate and burst; a zero limit means the class is not limited.
type bucketShape struct {
	limit rate.Limit
	burst int
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// newIPLimiter makes the limit called name for every class, shape giving a class's sustained
// rate per second and burst from its limits. It is nil when no class has the limit.
func newIPLimiter(name string, classes []limitClass, shape func(RateLimitConfig) (perSecond float64, burst int)) *ipLimiter {
	l := &ipLimiter{name: name, shapes: make([]bucketShape, len(classes)), buckets: map[netip.Addr]*bucket{}}
	limited := false
	for i, c := range classes {
		if ps, burst := shape(c.limits); ps > 0 {
			l.shapes[i] = bucketShape{limit: rate.Limit(ps), burst: max(burst, 1)}
			limited = true
		}
	}
	if !limited {
		return nil
	}
	return l
}

// perMinute is the shape of a per-minute limit: its rate per second, and half a minute's
// worth as the burst.
func perMinute(n float64) (float64, int) { return n / 60, max(int(n/2), 1) }

// allow takes a token for ip, of the given class; when there is none it says how long until
// there will be.
func (l *ipLimiter) allow(ip netip.Addr, class int, now time.Time) (bool, time.Duration) {
	sh := l.shapes[class]
	if sh.limit <= 0 {
		return true, 0
	}
	l.mu.Lock()
	b := l.buckets[ip]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(sh.limit, sh.burst)}
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
			ip, class := clientOf(r)
			ok, wait := l.allow(ip, class, time.Now())
			if !ok {
				s.m.limited.WithLabelValues(l.name, s.ips.className(class)).Inc()
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				writeJSONError(w, http.StatusTooManyRequests, "rate limit exceeded")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// connLimitListener caps concurrent connections per peer IP, below TLS, so a client cannot
// hold every socket open. The cap is the max_conns_per_ip of the peer's address class.
// Trusted proxies are exempt: they carry many clients.
type connLimitListener struct {
	net.Listener
	max     []int // by class index; 0: no cap for the class
	ips     clientIPs
	plain   bool // whether a plain-HTTP 429 can be written before closing
	onLimit func(class string)

	mu    sync.Mutex
	count map[netip.Addr]int
}

func newConnLimitListener(l net.Listener, ips clientIPs, plain bool, onLimit func(class string)) net.Listener {
	maxes := make([]int, len(ips.classes))
	capped := false
	for i, c := range ips.classes {
		maxes[i] = max(c.limits.MaxConnsPerIP, 0)
		capped = capped || maxes[i] > 0
	}
	if !capped {
		return l
	}
	return &connLimitListener{Listener: l, max: maxes, ips: ips, plain: plain, onLimit: onLimit, count: map[netip.Addr]int{}}
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
		class := l.ips.class(ip)
		limit := l.max[class]
		if limit <= 0 {
			return c, nil
		}
		l.mu.Lock()
		if l.count[ip] >= limit {
			l.mu.Unlock()
			l.onLimit(l.ips.className(class))
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
