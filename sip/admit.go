package sip

import (
	"net"
	"net/netip"
	"strconv"
	"sync"

	gosip "github.com/emiago/sipgo/sip"
	"golang.org/x/time/rate"

	"github.com/dualgate/dualgate/sip/guard"
	"github.com/dualgate/dualgate/sip/sanity"
)

// Admission control. Past its capacity a SIP proxy that accepts everything collapses: the
// socket queue grows, answers come late, callers retransmit, the retransmissions add load, and
// calls fail for everyone. We refuse new calls past sip.max_cps at once with a stateless 503
// and Retry-After, built from the raw datagram before sipgo parses it or opens a transaction,
// so a refusal costs a few microseconds and the admitted calls keep their pace. In-dialog
// requests are never refused here: they belong to calls already admitted.

func newLimiter(maxCPS int) *rate.Limiter {
	if maxCPS <= 0 {
		return nil
	}
	// A tenth of a second of burst absorbs arrival jitter without letting a flood through.
	return rate.NewLimiter(rate.Limit(maxCPS), max(maxCPS/10, 1))
}

// admitNewCall reports whether one more new call fits under sip.max_cps.
func (r *Router) admitNewCall() bool { return r.limiter == nil || r.limiter.Allow() }

// admitConn sits between the UDP socket (already behind the sanity check) and sipgo.
type admitConn struct {
	net.PacketConn
	r     *Router
	ready chan struct{} // closed on sipgo's first read: by then it has registered the socket
	once  sync.Once
}

func newAdmitConn(pc net.PacketConn, r *Router) *admitConn {
	return &admitConn{PacketConn: pc, r: r, ready: make(chan struct{})}
}

func (c *admitConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.once.Do(func() { close(c.ready) })
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err == nil && !c.r.admitDatagram(b[:n], addr) {
			continue
		}
		if err != nil || c.r.limiter == nil || !sanity.InitialInvite(b[:n]) || c.r.limiter.Allow() {
			return n, addr, err
		}
		c.r.m.rejected.WithLabelValues("overload").Inc()
		if resp := sanity.Answer(b[:n], 503, "Overloaded", "Retry-After: "+strconv.Itoa(c.r.cfg.RetryAfter)); resp != nil {
			// Best effort like any UDP answer: if it is lost the caller retransmits and the
			// retransmission is judged afresh.
			_, _ = c.PacketConn.WriteTo(resp, addr)
		}
	}
}

// admitDatagram runs the flood guard on a UDP request before it is parsed: a flood, a banned
// source or a scanner costs a map lookup, not a parse and a transaction. The cluster is never
// limited here (its load is the product's load).
func (r *Router) admitDatagram(data []byte, addr net.Addr) bool {
	if r.guard == nil || sanity.IsResponse(data) {
		return true
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return true
	}
	ip, _ := netip.AddrFromSlice(ua.IP)
	ip = ip.Unmap()
	if class, _ := r.classify(ip); class == sourceCluster {
		return true
	}
	return r.judge(ip, sanity.UserAgent(data))
}

// admitSource is admitDatagram for a request that came over a stream transport.
func (r *Router) admitSource(ip netip.Addr, req *gosip.Request) bool {
	if r.guard == nil {
		return true
	}
	var ua []byte
	if h := req.GetHeader("User-Agent"); h != nil {
		ua = []byte(h.Value())
	}
	return r.judge(ip, ua)
}

func (r *Router) judge(ip netip.Addr, userAgent []byte) bool {
	v := r.guard.Check(ip, string(userAgent))
	if v == guard.Allow {
		return true
	}
	r.m.rejected.WithLabelValues("guard_" + v.String()).Inc()
	return false
}
