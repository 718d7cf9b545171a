package sip

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// NAT traversal. Phones and softphones sit behind NAT: the addresses they write into Contact
// and Via are private and useless from here. What works is the address their packets come
// from, and for TCP/TLS the very connection they opened (a fresh connection to a private
// address or to a NAT's ephemeral port never arrives). So:
//
//   - every binding keeps the source address, transport and connection of its REGISTER, and
//     calls to the user go there;
//   - the Contact of a dialog-creating request or answer from an outside party gets an
//     `alias` parameter naming its real source (as Kamailio's add_contact_alias), so in-dialog
//     requests from the cluster, whose Request-URI is that Contact, reach it too;
//   - the gateway never dials an outside party over a stream transport: when its connection is
//     gone the request fails at once (480 or 408), and its bindings are dropped with it;
//   - bindings over UDP get an OPTIONS ping every registrar.keepalive so the NAT mapping stays.

const aliasParam = "alias"

// connID names a stream connection by transport and remote address: sipgo's connection pool
// is keyed by the remote address, and the registrar ties bindings to it.
func connID(transport, remote string) string { return strings.ToLower(transport) + ":" + remote }

// trackingListener reports each accepted connection's end, so bindings that depend on it go
// with it.
type trackingListener struct {
	net.Listener
	transport string
	closed    func(id string)
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, id: connID(l.transport, c.RemoteAddr().String()), closed: l.closed}, nil
}

type trackedConn struct {
	net.Conn
	id     string
	closed func(id string)
	once   sync.Once
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.once.Do(func() { c.closed(c.id) })
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.closed(c.id) })
	return c.Conn.Close()
}

// connGone drops the bindings of a closed connection.
func (r *Router) connGone(id string) {
	if r.loc == nil {
		return
	}
	if n := r.loc.DropConn(id); n > 0 {
		r.log.Info("connection closed, bindings removed", "conn", id, "bindings", n)
	}
}

// streamAlive reports whether a stream connection to addr exists: for outside parties it is
// the only way to reach them.
func (r *Router) streamAlive(transport, addr string) bool {
	c, err := r.ua.TransportLayer().GetConnection(strings.ToLower(transport), addr)
	return err == nil && c != nil
}

// addAlias writes the real source of an outside party into its Contact. The header is
// replaced, not edited: sipgo shares header objects between the received message and ours.
func addAlias(m headerEditor, source, transport string) {
	h := m.GetHeader("Contact")
	c, ok := h.(*gosip.ContactHeader)
	if !ok || c.Address.Wildcard {
		return
	}
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return
	}
	nc := c.Clone()
	nc.Address.UriParams = nc.Address.UriParams.Clone()
	nc.Address.UriParams.Add(aliasParam, ap.Addr().Unmap().String()+"~"+strconv.Itoa(int(ap.Port()))+"~"+strings.ToLower(transport))
	m.ReplaceHeader(nc)
}

// headerEditor is what requests and responses share for header edits.
type headerEditor interface {
	GetHeader(name string) gosip.Header
	ReplaceHeader(h gosip.Header)
}

// aliasTarget reads an alias parameter back: where a Request-URI's party really is.
func aliasTarget(u *gosip.Uri) (target, bool) {
	v, ok := u.UriParams.Get(aliasParam)
	if !ok {
		return target{}, false
	}
	parts := strings.Split(v, "~")
	if len(parts) != 3 {
		return target{}, false
	}
	ip, err := netip.ParseAddr(parts[0])
	port, perr := strconv.Atoi(parts[1])
	tr := strings.ToUpper(parts[2])
	if err != nil || perr != nil || port < 1 || port > 65535 || (tr != "UDP" && tr != "TCP" && tr != "TLS" && tr != "WS" && tr != "WSS") {
		return target{}, false
	}
	addr := netip.AddrPortFrom(ip, uint16(port)).String()
	return target{addr: addr, host: ip.String(), transport: tr, outside: true}, true
}

// stripAlias removes our alias from the Request-URI we send: the party gets its own Contact
// back, as it wrote it.
func stripAlias(req *gosip.Request) {
	if _, ok := req.Recipient.UriParams.Get(aliasParam); !ok {
		return
	}
	u := req.Recipient
	u.UriParams = u.UriParams.Clone()
	u.UriParams.Remove(aliasParam)
	req.Recipient = u
}

// keepalive pings every UDP binding so its NAT mapping stays open. The OPTIONS is sent
// without a transaction; the answer comes back to our Via and is dropped as a stray response.
func (r *Router) keepalive(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, b := range r.loc.All() {
			if b.Transport != "UDP" || !b.Source.IsValid() {
				continue
			}
			r.ping(b.Source)
		}
	}
}

func (r *Router) ping(dst netip.AddrPort) {
	ruri := gosip.Uri{Scheme: "sip", Host: dst.Addr().Unmap().String(), Port: int(dst.Port())}
	req := gosip.NewRequest(gosip.OPTIONS, ruri)
	req.SetTransport("UDP")
	req.SetDestination(hostPortKey(ruri.Host, ruri.Port))
	r.setLocal(req, ruri.Host)
	req.AppendHeader(r.newVia("UDP", keepaliveBranch+gosip.GenerateTagN(10)))
	from := gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: "keepalive", Host: r.viaHost}}
	from.Params.Add("tag", gosip.GenerateTagN(8))
	req.AppendHeader(&from)
	to := gosip.ToHeader{Address: ruri}
	req.AppendHeader(&to)
	cid := gosip.CallIDHeader(gosip.GenerateTagN(16))
	req.AppendHeader(&cid)
	cseq := gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.OPTIONS}
	req.AppendHeader(&cseq)
	mf := gosip.MaxForwardsHeader(1)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	r.m.keepalives.Inc()
	if err := r.cli.WriteRequest(req, prebuilt); err != nil {
		r.log.Debug("keepalive failed", "remote", dst.String(), "error", err)
	}
}

// keepaliveBranch marks our keepalive OPTIONS, whose answers are dropped.
const keepaliveBranch = "z9hG4bK-dgka"
