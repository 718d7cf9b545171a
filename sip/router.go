// Package sip is the SIP plane: a transaction-stateful proxy on sipgo with a dispatcher in front
// of the FreeSWITCH cluster.
//
// Every request goes through one chain, in this order (see Router.onRequest):
//
//	sanity → Max-Forwards → in-dialog (our Route → loose routing) → loop detection →
//	requests addressed to us (OPTIONS keepalive) → route table → overload guard →
//	dispatcher set → relay with failover
//
// Each stage ends in a relay or a final response; none leaves a transaction open.
package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/dualgate/dualgate/internal/tlsadmit"
	"github.com/dualgate/dualgate/sip/auth"
	"github.com/dualgate/dualgate/sip/dispatcher"
	"github.com/dualgate/dualgate/sip/guard"
	"github.com/dualgate/dualgate/sip/registrar"
	"github.com/dualgate/dualgate/sip/sanity"
)

// Router is the SIP plane. Start binds the listeners; Stop closes them and waits for the
// goroutines it started.
type Router struct {
	cfg    Config
	log    *slog.Logger
	disp   *dispatcher.Dispatcher
	m      *metrics
	routes []route

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	cli *sipgo.Client

	dialogs *dialogs

	// Source policy, compiled from the config.
	trusted []netip.Prefix
	trunks  []trunk
	domains map[string]bool

	// The edge: digest auth, registrar and location, flood guard, topology hiding.
	users Directory
	auth  *auth.Authenticator
	reg   *registrar.Registrar
	loc   registrar.Store
	guard *guard.Guard
	topo  *topology // nil when topology hiding is off

	agents *agentRegistry // browser agents' streams from the bridge

	// Filled by Start: what we call ourselves in Via and Record-Route, and every host:port
	// that means "this node" when it appears in a Route header.
	viaHost        string
	ports          map[string]int // transport → port written into Via / Record-Route
	self           map[string]bool
	selfHosts      map[string]bool     // listener and advertised hosts, any port: our domain in a Request-URI
	udpLocal       map[bool]gosip.Addr // by IPv6-ness: the listener socket UDP requests leave from
	datagrams      []*datagramConn     // the UDP listeners, as sipgo reads them (datagram.go)
	udpReady       []chan struct{}     // closed once sipgo serves each UDP socket
	bound          []net.Addr
	boundTransport []string // udp, tcp or tls, by bound index
	tlsConf        *tls.Config
	tlsMetrics     *tlsadmit.Metrics // the tls: listeners' handshake admission; nil without one
	tlsHooks       tlsadmit.Hooks    // tests watch the handshake workers

	inflight atomic.Int64
	limiter  *rate.Limiter // nil: no cap on new calls per second
	closers  []func() error
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// New builds the router. It does not touch the network until Start. users may be nil: then
// nobody registers and every untrusted caller is refused.
func New(cfg Config, disp *dispatcher.Dispatcher, users Directory, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: log, disp: disp, m: newMetrics(reg), limiter: newLimiter(cfg.MaxCPS), users: users}
	for _, rc := range cfg.Routes {
		rt, err := compileRoute(rc)
		if err != nil {
			return nil, err
		}
		r.routes = append(r.routes, rt)
	}
	r.dialogs = newDialogs(r.m)
	for _, l := range cfg.Listen {
		if spec, _ := parseListen(l); spec.transport == "tls" && r.tlsMetrics == nil {
			r.tlsMetrics = tlsadmit.NewMetrics(reg, tlsadmit.MetricsOpts{Namespace: "gateway", Subsystem: "sip", Conns: "SIP TLS"})
		}
	}
	r.agents = newAgentRegistry()
	r.trusted, _ = parsePrefixes(cfg.Trusted) // validated
	r.trunks = compileTrunks(cfg.Trunks)
	r.domains = map[string]bool{}
	for _, d := range cfg.Domains {
		r.domains[strings.ToLower(d)] = true
	}
	if err := r.buildEdge(reg); err != nil {
		return nil, err
	}

	// sipgo logs every unparsable datagram with its whole content at error level; those are
	// counted and answered by our sanity stage, so its own chatter is kept to warnings.
	lib := slog.New(levelFloor{h: log.Handler(), min: slog.LevelWarn})
	dialTLS, err := clientTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("dualgate"),
		sipgo.WithUserAgenTLSConfig(dialTLS),
		sipgo.WithUserAgentTransactionLayerOptions(
			gosip.WithTransactionLayerLogger(lib),
			gosip.WithTransactionLayerUnhandledResponseHandler(r.onStrayResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(gosip.WithTransportLayerLogger(lib),
			gosip.WithTransportLayerReadFilter(r.wholeDatagram)),
	)
	if err != nil {
		return nil, fmt.Errorf("create sip user agent: %w", err)
	}
	r.ua = ua
	if r.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(lib)); err != nil {
		return nil, fmt.Errorf("create sip server: %w", err)
	}
	if r.cli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(lib)); err != nil {
		return nil, fmt.Errorf("create sip client: %w", err)
	}
	r.srv.OnNoRoute(r.onRequest)
	for _, m := range []gosip.RequestMethod{gosip.INVITE, gosip.BYE, gosip.OPTIONS, gosip.REGISTER,
		gosip.INFO, gosip.UPDATE, gosip.REFER, gosip.NOTIFY, gosip.SUBSCRIBE, gosip.MESSAGE, gosip.PRACK, gosip.PUBLISH} {
		r.srv.OnRequest(m, r.onRequest)
	}
	r.srv.OnAck(r.onAck)
	r.srv.OnCancel(r.onCancel)
	return r, nil
}

// Start binds every listener (so a port conflict fails the start), works out the addresses
// that name this node, and only then serves the sockets: a request that arrives at once must
// find that state complete.
func (r *Router) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(ctx)
	r.ports = map[string]int{}
	r.self = map[string]bool{}
	r.selfHosts = map[string]bool{}
	r.udpLocal = map[bool]gosip.Addr{}
	advHost, advPort, _ := splitAdvertise(r.cfg.Advertise)

	var serve []func()
	for _, l := range r.cfg.Listen {
		spec, _ := parseListen(l) // validated in New
		fn, err := r.bind(spec)
		if err != nil {
			r.Stop(context.Background())
			return err
		}
		serve = append(serve, fn)
	}
	if advHost == "" {
		advHost, _, _ = net.SplitHostPort(r.bound[0].String())
		if ip := net.ParseIP(advHost); ip != nil && ip.IsUnspecified() {
			r.Stop(context.Background())
			return errors.New("sip.advertise is required when listening on an unspecified address")
		}
	}
	r.viaHost = advHost
	for i, a := range r.bound {
		h, p, _ := net.SplitHostPort(a.String())
		tr := r.boundTransport[i]
		port, _ := strconv.Atoi(p)
		if _, ok := r.ports[tr]; !ok {
			r.ports[tr] = port
		}
		if advPort != 0 {
			r.ports[tr] = advPort
		}
		r.self[hostPortKey(h, port)] = true
		r.selfHosts[strings.ToLower(strings.Trim(h, "[]"))] = true
		r.self[hostPortKey(advHost, r.ports[tr])] = true
	}

	r.closers = append(r.closers, r.agents.ln.Close)
	serve = append(serve, func() { _ = r.srv.ServeTCP(r.agents.ln) })
	for _, fn := range serve {
		r.wg.Go(fn)
	}
	// UDP requests leave from the listening sockets, which sipgo finds in its connection pool
	// only once it serves them; a request relayed before that (say, one that came in over TCP
	// at once) would make sipgo bind the address a second time.
	for _, ready := range r.udpReady {
		select {
		case <-ready:
		case <-ctx.Done():
			r.Stop(context.Background())
			return fmt.Errorf("sip plane start: %w", ctx.Err())
		}
	}
	r.wg.Go(func() { r.dialogs.sweep(ctx, r.cfg.MaxDialogDuration) })
	r.wg.Go(func() { r.loc.(*registrar.MemoryStore).Run(ctx, time.Second) })
	r.wg.Go(func() { r.guard.Run(ctx) })
	if r.cfg.Registrar.Keepalive > 0 {
		r.wg.Go(func() { r.keepalive(ctx, r.cfg.Registrar.Keepalive) })
	}
	if far := udpWithoutListener(r.disp.Sets(), r.udpLocal); len(far) > 0 {
		r.log.Warn("UDP destinations of an address family with no UDP listener: answers over 4 KiB from them are lost; listen on UDP in that family",
			"destinations", far)
	}
	r.log.Info("sip plane started", "listen", r.Addrs(), "advertise", r.viaHost)
	return nil
}

// bind opens one listener and returns the function that serves it.
func (r *Router) bind(spec listenSpec) (func(), error) {
	switch spec.transport {
	case "udp":
		pc, err := net.ListenPacket("udp", spec.addr)
		if err != nil {
			return nil, fmt.Errorf("sip listen udp %s: %w", spec.addr, err)
		}
		if uc, ok := pc.(*net.UDPConn); ok && r.cfg.UDPBuffer > 0 {
			if err := uc.SetReadBuffer(r.cfg.UDPBuffer); err != nil {
				r.log.Warn("cannot set UDP receive buffer", "size", r.cfg.UDPBuffer, "error", err)
			}
			if err := uc.SetWriteBuffer(r.cfg.UDPBuffer); err != nil {
				r.log.Warn("cannot set UDP send buffer", "size", r.cfg.UDPBuffer, "error", err)
			}
		}
		ua := pc.LocalAddr().(*net.UDPAddr)
		r.bound = append(r.bound, ua)
		r.boundTransport = append(r.boundTransport, "udp")
		v6 := ua.IP.To4() == nil
		if _, ok := r.udpLocal[v6]; !ok {
			r.udpLocal[v6] = gosip.Addr{IP: ua.IP, Port: ua.Port}
		}
		guarded := sanity.NewPacketConn(pc, r.cfg.MaxMessageSize, func(src net.Addr, reason string) {
			r.m.rejected.WithLabelValues("malformed").Inc()
			r.log.Debug("malformed datagram refused", "remote", src.String(), "reason", reason)
		})
		r.closers = append(r.closers, pc.Close)
		admitted := newAdmitConn(guarded, r)
		r.udpReady = append(r.udpReady, admitted.ready)
		whole := newDatagramConn(admitted, r.cfg.MaxMessageSize)
		r.datagrams = append(r.datagrams, whole)
		return func() { _ = r.srv.ServeUDP(whole) }, nil
	default: // "tcp", "tls"
		ln, err := net.Listen("tcp", spec.addr)
		if err != nil {
			return nil, fmt.Errorf("sip listen %s %s: %w", spec.transport, spec.addr, err)
		}
		r.bound = append(r.bound, ln.Addr())
		r.boundTransport = append(r.boundTransport, spec.transport)
		tracked := &trackingListener{Listener: ln, transport: spec.transport, closed: r.connGone}
		if spec.transport == "tls" {
			// Handshakes run on the admission's workers, in arrival order, each with its own
			// deadline (internal/tlsadmit); sipgo gets *tls.Conn whose handshake is done, and
			// a client certificate, with sip.tls.client_ca_file, was verified in it.
			tl := tlsadmit.NewListener(tracked, r.tlsConf, r.cfg.TLS.Handshakes.admission(),
				tlsadmit.Options{Metrics: r.tlsMetrics, Hooks: r.tlsHooks})
			r.closers = append(r.closers, tl.Close) // closes ln, the queue and the handshakes
			return func() { _ = r.srv.ServeTLS(tl) }, nil
		}
		r.closers = append(r.closers, ln.Close)
		return func() { _ = r.srv.ServeTCP(tracked) }, nil
	}
}

// Addrs returns the bound listener addresses as transport:host:port (useful with port 0).
func (r *Router) Addrs() []string {
	out := make([]string, 0, len(r.bound))
	for i, a := range r.bound {
		out = append(out, r.boundTransport[i]+":"+a.String())
	}
	return out
}

// Stop closes the listeners and the transport layer and waits for the router's goroutines.
func (r *Router) Stop(ctx context.Context) error {
	if r.cancel != nil {
		r.cancel()
	}
	var errs []error
	for _, c := range r.closers {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	r.closers = nil
	if err := r.ua.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close sip transports: %w", err))
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("sip plane stop: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// Ping sends an OPTIONS health probe to a dispatcher destination; it implements
// dispatcher.Pinger.
func (r *Router) Ping(ctx context.Context, dst *dispatcher.Destination) (int, error) {
	ruri := gosip.Uri{Scheme: "sip", Host: dst.Host, Port: dst.Port}
	req := gosip.NewRequest(gosip.OPTIONS, ruri)
	tr := strings.ToUpper(dst.Transport)
	req.SetTransport(tr)
	req.SetDestination(dst.Addr())
	r.setLocal(req, dst.Host)
	via := r.newVia(tr, gosip.GenerateBranchN(16))
	from := gosip.FromHeader{Address: gosip.Uri{Scheme: "sip", User: "dispatcher", Host: r.viaHost}}
	from.Params.Add("tag", gosip.GenerateTagN(12))
	to := gosip.ToHeader{Address: ruri}
	callID := gosip.CallIDHeader(gosip.GenerateTagN(24))
	cseq := gosip.CSeqHeader{SeqNo: 1, MethodName: gosip.OPTIONS}
	mf := gosip.MaxForwardsHeader(70)
	req.AppendHeader(via)
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(&callID)
	req.AppendHeader(&cseq)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	tx, err := r.cli.TransactionRequest(ctx, req, prebuilt)
	if err != nil {
		return 0, fmt.Errorf("send OPTIONS to %s: %w", dst.Addr(), err)
	}
	defer tx.Terminate()
	res, err := finalResponse(ctx, tx)
	if err != nil {
		return 0, fmt.Errorf("OPTIONS to %s: %w", dst.Addr(), err)
	}
	return int(res.StatusCode), nil
}

// finalResponse waits for a client transaction's final response.
func finalResponse(ctx context.Context, tx gosip.ClientTransaction) (*gosip.Response, error) {
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			return nil, tx.Err()
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer: %w", ctx.Err())
		}
	}
}

// prebuilt tells sipgo's client that the request is complete: it must add nothing.
func prebuilt(*sipgo.Client, *gosip.Request) error { return nil }

func (r *Router) newVia(transport, branch string) *gosip.ViaHeader {
	v := &gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: r.viaHost, Port: r.ports[strings.ToLower(transport)]}
	v.Params.Add("branch", branch)
	return v
}

// setLocal makes UDP requests leave from our listening socket, so the backend sees the
// address it answers to (sipgo would otherwise open an ephemeral socket per destination).
func (r *Router) setLocal(req *gosip.Request, host string) {
	if req.Transport() != "UDP" {
		return
	}
	ip, err := netip.ParseAddr(host)
	v6 := err == nil && ip.Is6() && !ip.Is4In6()
	if a, ok := r.udpLocal[v6]; ok {
		req.Laddr = a
	}
}

func hostPortKey(host string, port int) string {
	host = strings.ToLower(strings.Trim(host, "[]"))
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// isSelf reports whether a URI names this node.
func (r *Router) isSelf(u *gosip.Uri) bool {
	port := u.Port
	if port == 0 {
		port = 5060
		if strings.EqualFold(u.Scheme, "sips") {
			port = 5061
		}
	}
	return r.self[hostPortKey(u.Host, port)]
}

// levelFloor drops records below min: it quiets a library without touching its globals.
type levelFloor struct {
	h   slog.Handler
	min slog.Level
}

func (l levelFloor) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.min && l.h.Enabled(ctx, lv)
}
func (l levelFloor) Handle(ctx context.Context, rec slog.Record) error { return l.h.Handle(ctx, rec) }
func (l levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{h: l.h.WithAttrs(a), min: l.min}
}
func (l levelFloor) WithGroup(g string) slog.Handler {
	return levelFloor{h: l.h.WithGroup(g), min: l.min}
}

var _ dispatcher.Pinger = (*Router)(nil)

// ApplyProcessSettings sets sipgo's process-wide knobs from the config. sipgo keeps them as
// package variables, so only main (and a test binary's TestMain) calls this, once, before any
// Router starts.
//
// sipgo refuses to send UDP messages over 1300 bytes. WebRTC SDP alone passes 1300 bytes, and
// backends listed as UDP often listen on nothing else, so we do what Kamailio does by default:
// send large messages over UDP (the kernel fragments them) up to max_message_size. Messages
// of that size are read whole on every transport (datagram.go), and nothing larger is parsed.
//
// A finished UDP transaction is kept to absorb retransmissions: RFC 3261 says for 64×T1 (32 s,
// Timers J and L). At a few thousand calls per second that holds hundreds of thousands of
// parsed messages. Like Kamailio's tm wait timer we keep them for TransactionLinger (5 s): a
// retransmission later than that is relayed again and the far end answers it as a duplicate.
func ApplyProcessSettings(cfg Config) {
	gosip.UDPMTUSize = cfg.MaxMessageSize + 200 // sipgo keeps 200 bytes of headroom below it
	gosip.TransportBufferReadSize = StreamReadSize
	gosip.ParseMaxMessageLength = cfg.MaxMessageSize
	gosip.Timer_J = TransactionLinger
	gosip.Timer_L = TransactionLinger
}

// TransactionLinger is how long a finished UDP server transaction absorbs retransmissions.
const TransactionLinger = 5 * time.Second
