package sip

import (
	"net"
	"net/netip"

	gosip "github.com/emiago/sipgo/sip"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// Read buffers. sipgo gives every connection it reads, a UDP socket or one stream among
// thousands, a buffer of one process-wide size (gosip.TransportBufferReadSize). A datagram
// must arrive whole, so UDP needs max_message_size; a stream does not (sipgo's stream parser
// puts a message together over as many reads as it takes), and each agent's WebSocket and each
// phone's TCP or TLS connection holding 64 KiB it never fills was most of an idle agent's
// memory. So the process-wide size is the stream size, and each UDP listener reads into a
// buffer of its own, max_message_size long: datagramConn hands sipgo the first bytes of each
// datagram and the router's read filter (run by sipgo on the same goroutine, right after the
// read) swaps in the whole of it.

// StreamReadSize is what sipgo reads each stream connection with.
const StreamReadSize = 4 << 10

// datagramConn is the outermost layer of a UDP listener, the one sipgo reads.
type datagramConn struct {
	net.PacketConn // admission, sanity and the socket
	laddr          net.Addr
	buf            []byte
	last           []byte // the datagram the last read returned: only sipgo's reader touches it
}

func newDatagramConn(pc net.PacketConn, maxSize int) *datagramConn {
	return &datagramConn{PacketConn: pc, laddr: pc.LocalAddr(), buf: make([]byte, maxSize)}
}

func (c *datagramConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(c.buf)
	if err != nil {
		c.last = nil
		return 0, addr, err
	}
	c.last = c.buf[:n]
	return copy(b, c.last), addr, nil
}

// LocalAddr is the same value on every call: the read filter finds the listener by it.
func (c *datagramConn) LocalAddr() net.Addr { return c.laddr }

// wholeDatagram is the router's sipgo read filter: for a read from one of our UDP listeners
// it returns the whole datagram, of which sipgo's buffer may hold only the start. Streams pass
// through as read, and so do datagrams on a UDP socket sipgo opened itself unless they filled
// its buffer: the kernel cuts a longer datagram to the buffer without a word, and a cut
// message is dropped here, counted and logged, rather than failing to parse further on.
func (r *Router) wholeDatagram(p gosip.TransportReadProps, data []byte) ([]byte, error) {
	for _, d := range r.datagrams {
		if d.laddr == p.LocalAddr {
			return d.last, nil
		}
	}
	if p.Transport == "UDP" && len(data) >= int(gosip.TransportBufferReadSize) {
		r.m.rejected.WithLabelValues("truncated").Inc()
		r.log.Warn("datagram longer than the read buffer of a UDP socket the gateway opened itself: dropped; listen on UDP in the destination's address family",
			"remote", p.RemoteAddr.String(), "local", p.LocalAddr.String())
		return nil, nil
	}
	return data, nil
}

// udpWithoutListener lists the UDP destinations of an address family the router has no UDP
// listener for. sipgo reaches those from a socket it opens itself, which reads StreamReadSize
// bytes: a larger answer from such a destination is cut and lost.
func udpWithoutListener(sets []*dispatcher.Set, udpLocal map[bool]gosip.Addr) []string {
	var out []string
	for _, set := range sets {
		for _, d := range set.Dests {
			ip, err := netip.ParseAddr(d.Host)
			if d.Transport != "udp" || err != nil {
				continue // a name resolves per request; the log at start cannot judge it
			}
			if _, ok := udpLocal[ip.Is6() && !ip.Is4In6()]; !ok {
				out = append(out, d.URI)
			}
		}
	}
	return out
}
