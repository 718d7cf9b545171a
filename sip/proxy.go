package sip

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"

	"github.com/dualgate/dualgate/sip/dispatcher"
	"github.com/dualgate/dualgate/sip/sanity"
)

// target is one place a request can be relayed to.
type target struct {
	addr      string // host:port
	host      string
	transport string                  // "UDP", "TCP", "TLS"
	dst       *dispatcher.Destination // nil for in-dialog next hops
	popRoutes int                     // our own Route entries to remove before sending
	// outside: a phone or agent, reachable only where it came from; over a stream transport
	// only on its own connection, never by a new one.
	outside bool
	ruri    *gosip.Uri // the Request-URI to send (a binding's Contact); nil keeps the received one
	path    []string   // Route entries to add (a binding's Path, RFC 3327)
	laddr   string     // local UDP socket to send from (where a binding registered); "" picks one
}

func (r *Router) onRequest(req *gosip.Request, tx gosip.ServerTransaction) {
	method := string(req.Method)
	r.m.requests.WithLabelValues(methodLabel(method)).Inc()
	log := reqLog{log: r.log, req: req}

	if err := sanity.Request(req); err != nil {
		code, reason := sanityAnswer(err)
		r.m.rejected.WithLabelValues("malformed").Inc()
		log.Debug("request refused by sanity check", "status", code, "reason", reason)
		r.reply(tx, req, code, reason, nil)
		return
	}

	src := sourceAddr(req)
	class, trk := r.classify(src)
	agentUser, isAgent := r.agentOf(req.Transport(), req.Source())
	if isAgent {
		class = sourceAgent
	}
	// UDP was checked before parsing (admit.go); stream transports are checked here.
	if class != sourceCluster && req.Transport() != "UDP" && !r.admitSource(src, req) {
		return // dropped without an answer: flooding, banned, or a scanner
	}

	// RFC 3261 §16.3 step 3. An OPTIONS with Max-Forwards 0 addressed to us is ours to answer.
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		if req.Method == gosip.OPTIONS && req.Recipient.User == "" && r.isSelf(&req.Recipient) {
			r.replyOptions(tx, req)
			return
		}
		r.m.rejected.WithLabelValues("max_forwards").Inc()
		r.reply(tx, req, 483, "Too Many Hops", nil)
		return
	}

	// Only in-dialog requests (and the cluster's) are loose-routed. An initial request from
	// outside with a Route to us has it preloaded (a phone's outbound proxy setting): it goes
	// through the policy below like any other, or it would skip digest and the route table.
	if next, ok := r.looseRoute(req); ok && (inDialog(req) || class == sourceCluster) {
		if class != sourceCluster && class != sourceTrunk && !next.outside && r.isOutside(next) {
			// An outside party's dialogs run through the cluster, or to another outside party
			// by its alias. A made-up To tag with our Route naming some other host would
			// otherwise make us an open relay.
			r.m.rejected.WithLabelValues("relay_denied").Inc()
			log.Warn("in-dialog request to a foreign host refused", "target", next.addr)
			r.reply(tx, req, 403, "Relay Denied", nil)
			return
		}
		r.relayInDialog(req, tx, next, log)
		return
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		// In-dialog but not routed through us: we never Record-Routed this dialog, so relaying
		// it would make us an open relay for anyone who can guess a Call-ID.
		r.m.rejected.WithLabelValues("no_route").Inc()
		r.reply(tx, req, 404, "Not Here", nil)
		return
	}
	if r.isLoop(req) {
		r.m.rejected.WithLabelValues("loop").Inc()
		log.Warn("request loop detected")
		r.reply(tx, req, 482, "Loop Detected", nil)
		return
	}
	ours := r.isOurDomain(&req.Recipient)
	if req.Method == gosip.OPTIONS && req.Recipient.User == "" && ours {
		r.replyOptions(tx, req)
		return
	}
	if req.Method == gosip.REGISTER {
		if !ours {
			r.m.rejected.WithLabelValues("not_our_domain").Inc()
			r.reply(tx, req, 403, "Not Our Domain", nil)
			return
		}
		id := identity{trusted: class == sourceCluster, agent: agentUser}
		r.onRegister(req, tx, src, id, log)
		return
	}

	// Who is calling: the cluster and trusted networks by address, a trunk by address, anyone
	// else only as an authenticated user calling as themselves.
	switch class {
	case sourceAgent:
		// The JWT that opened the socket is the credential: an agent calls only as itself.
		if from := req.From(); from == nil || from.Address.User != agentUser {
			r.m.auth.WithLabelValues("from_mismatch").Inc()
			log.Warn("agent calling as someone else", "user", agentUser)
			r.reply(tx, req, 403, "From Does Not Match Agent", nil)
			return
		}
	case sourceUntrusted:
		if r.users == nil {
			r.m.rejected.WithLabelValues("untrusted").Inc()
			r.reply(tx, req, 403, "Forbidden", nil)
			return
		}
		user, ok := r.authenticate(req, tx, src, "Proxy-Authorization", log)
		if !ok {
			return
		}
		if from := req.From(); from == nil || from.Address.User != user {
			r.m.auth.WithLabelValues("from_mismatch").Inc()
			log.Warn("caller is not the authenticated user", "user", user)
			r.reply(tx, req, 403, "From Does Not Match Credentials", nil)
			return
		}
	case sourceTrunk:
		// A carrier's calls go to its own set, whatever the number.
		r.dispatch(req, tx, trk.set, trk.alg, log)
		return
	}

	if ours && r.users != nil && r.users.Exists(req.Recipient.User) {
		r.callUser(req, tx, log)
		return
	}
	if class == sourceCluster && ours && r.users != nil {
		// The cluster calls users; a name it sends back to us that is no user is not ours to
		// route (dispatched, it would loop into the cluster again).
		r.m.rejected.WithLabelValues("unknown_user").Inc()
		r.reply(tx, req, 404, "Not Found", nil)
		return
	}
	rt := r.matchRoute(req)
	if rt == nil {
		r.m.rejected.WithLabelValues("no_route").Inc()
		log.Debug("no route for request")
		r.reply(tx, req, 404, "No Route", nil)
		return
	}
	r.dispatch(req, tx, rt.set, rt.alg, log)
}

// callUser forks a call to a registered user's bindings: 480 when the user has none.
func (r *Router) callUser(req *gosip.Request, tx gosip.ServerTransaction, log reqLog) {
	targets := r.userTargets(req.Recipient.User)
	if len(targets) == 0 {
		r.m.rejected.WithLabelValues("not_registered").Inc()
		r.reply(tx, req, 480, "Temporarily Unavailable", nil)
		return
	}
	if req.IsInvite() && !r.admitInflight() {
		r.m.rejected.WithLabelValues("overload").Inc()
		r.reply(tx, req, 503, "Overloaded", r.retryAfter())
		return
	}
	if req.IsInvite() {
		defer r.inflight.Add(-1)
	}
	r.fork(req, tx, targets, log)
}

// admitInflight counts one more INVITE awaiting its answer, or refuses it past max_inflight.
func (r *Router) admitInflight() bool {
	if r.inflight.Add(1) > int64(r.cfg.MaxInflight) {
		r.inflight.Add(-1)
		return false
	}
	return true
}

// dispatch sends a new request to a dispatcher set, with failover.
func (r *Router) dispatch(req *gosip.Request, tx gosip.ServerTransaction, set int, alg dispatcher.Algorithm, log reqLog) {
	if req.IsInvite() {
		// UDP calls were already counted against max_cps before parsing (admit.go).
		if req.Transport() != "UDP" && !r.admitNewCall() {
			r.m.rejected.WithLabelValues("overload").Inc()
			r.reply(tx, req, 503, "Overloaded", r.retryAfter())
			return
		}
		if !r.admitInflight() {
			r.m.rejected.WithLabelValues("overload").Inc()
			r.reply(tx, req, 503, "Overloaded", r.retryAfter())
			return
		}
		defer r.inflight.Add(-1)
	}

	key := dispatcher.Key{CallID: callID(req), RURIUser: req.Recipient.User}
	if f := req.From(); f != nil {
		key.FromURI = f.Address.Addr()
	}
	if t := req.To(); t != nil {
		key.ToURI = t.Address.Addr()
	}
	if auth := req.GetHeader("Proxy-Authorization"); auth != nil {
		key.AuthUser = digestUsername(auth.Value())
	}
	var buf [8]*dispatcher.Destination
	dsts := r.disp.Select(set, alg, &key, buf[:0])
	if len(dsts) == 0 {
		r.m.rejected.WithLabelValues("no_destination").Inc()
		log.Warn("no destination available", "set", set)
		r.reply(tx, req, 503, "No Destination Available", r.retryAfter())
		return
	}
	targets := make([]target, len(dsts))
	for i, d := range dsts {
		targets[i] = target{addr: d.Addr(), host: d.Host, transport: strings.ToUpper(d.Transport), dst: d}
	}
	r.relay(req, tx, targets, true, log)
}

// onAck forwards an ACK for a 2xx along our Route. ACKs for non-2xx answers are hop-by-hop and
// absorbed by the transaction layer before they get here.
func (r *Router) onAck(req *gosip.Request, _ gosip.ServerTransaction) {
	r.m.requests.WithLabelValues("ACK").Inc()
	if err := sanity.Request(req); err != nil {
		return // nothing can answer an ACK
	}
	next, ok := r.looseRoute(req)
	if !ok || !inDialog(req) {
		return // a 2xx ACK is always in a dialog; one without a To tag is nobody's to relay
	}
	fwd := forwardCopy(req)
	r.prepareForward(fwd, req, next, false, statelessBranch(req))
	if err := r.cli.WriteRequest(fwd, prebuilt); err != nil {
		r.log.Warn("forward ACK failed", "call_id", callID(req), "backend", next.addr, "error", err)
	}
}

// onCancel sees only CANCELs that match no pending INVITE: the transaction layer answers the
// matching ones itself (200, then 487 upstream) and signals the INVITE's relay to cancel.
func (r *Router) onCancel(req *gosip.Request, tx gosip.ServerTransaction) {
	r.m.requests.WithLabelValues("CANCEL").Inc()
	r.reply(tx, req, 481, "Call/Transaction Does Not Exist", nil)
}

// matchRoute returns the first route that applies to req, or nil.
func (r *Router) matchRoute(req *gosip.Request) *route {
	src := sourceAddr(req)
	for i := range r.routes {
		if r.routes[i].match(string(req.Method), req.Recipient.User, req.Recipient.Host, src) {
			return &r.routes[i]
		}
	}
	return nil
}

// inDialog reports whether req belongs to a dialog: its To has a tag.
func inDialog(req *gosip.Request) bool {
	to := req.To()
	return to != nil && to.Params.Has("tag")
}

func sourceAddr(m gosip.Message) netip.Addr {
	ap, err := netip.ParseAddrPort(m.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// looseRoute implements RFC 3261 §16.4: when the top Route is ours (one entry, or two after a
// transport change, RFC 5658), the request goes to the next Route, or else to the
// Request-URI. It only reads req (sipgo's own timers read the received request concurrently);
// the returned target says how many Route entries to pop from the copy we send.
func (r *Router) looseRoute(req *gosip.Request) (target, bool) {
	routes := req.GetHeaders("Route")
	pop := 0
	for pop < len(routes) && pop < 2 {
		rt, ok := routes[pop].(*gosip.RouteHeader)
		if !ok || !r.isSelf(&rt.Address) {
			break
		}
		pop++
	}
	if pop == 0 {
		// A Request-URI that is one of our sealed Contacts is ours to route even without a
		// Route: we gave that Contact out (topology hiding).
		if t, ok := r.requestURITarget(req); ok && t.ruri != nil {
			return t, true
		}
		return target{}, false
	}
	var t target
	if pop < len(routes) {
		rt, ok := routes[pop].(*gosip.RouteHeader)
		if !ok {
			return target{}, false
		}
		t = uriTarget(&rt.Address)
	} else {
		t, _ = r.requestURITarget(req)
	}
	t.popRoutes = pop
	return t, true
}

// requestURITarget is where a request goes by its Request-URI: a sealed cluster Contact
// (topology hiding, the Request-URI is restored), a Contact with our NAT alias (the party's
// real source), or the URI itself. ok is false for a plain URI.
func (r *Router) requestURITarget(req *gosip.Request) (target, bool) {
	if u, ok := r.revealTarget(&req.Recipient); ok {
		t := uriTarget(u)
		t.ruri = u
		return t, true
	}
	if t, ok := aliasTarget(&req.Recipient); ok {
		return t, true
	}
	return uriTarget(&req.Recipient), false
}

func uriTarget(u *gosip.Uri) target {
	tr := "UDP"
	if strings.EqualFold(u.Scheme, "sips") {
		tr = "TLS"
	}
	if v, ok := u.UriParams.Get("transport"); ok {
		tr = strings.ToUpper(v)
	}
	port := u.Port
	if port == 0 {
		port = 5060
		if tr == "TLS" {
			port = 5061
		}
	}
	host := strings.Trim(u.Host, "[]")
	return target{addr: hostPortKey(host, port), host: host, transport: tr}
}

// forwardCopy makes the request we send from the one we received. It shares the received
// header objects rather than deep-copying them all (sipgo's Clone was a fifth of all
// allocation under load). The copy has its own header list, so prepareForward may add, pop
// and replace headers on it; the only header object it edits in place, the sender's Via, is
// copied.
func forwardCopy(req *gosip.Request) *gosip.Request {
	fwd := gosip.NewRequest(req.Method, req.Recipient)
	fwd.SipVersion = req.SipVersion
	topVia := true
	for _, h := range req.Headers() {
		if v, ok := h.(*gosip.ViaHeader); ok && topVia {
			// The sender's Via gets received/rport stamped: that edit needs its own copy, as
			// sipgo's 100 Trying timer reads the received request's Via concurrently.
			topVia = false
			h = v.Clone()
		}
		fwd.AppendHeader(h)
	}
	fwd.SetBody(req.Body())
	fwd.SetTransport(req.Transport())
	fwd.SetSource(req.Source())
	return fwd
}

// prepareForward turns a copy of the received request into the one we send (RFC 3261 §16.6):
// Max-Forwards decremented, our Via on top, Record-Route for dialog-creating requests.
func (r *Router) prepareForward(fwd, orig *gosip.Request, t target, recordRoute bool, branch string) {
	for range t.popRoutes {
		fwd.RemoveHeader("Route")
	}
	if t.popRoutes == 0 && !inDialog(orig) {
		// A Route the sender preloaded on an initial request was not followed: the chain chose
		// the next hop. Passed on, it would send the request back here (Kamailio's default
		// config likewise removes Route from initial requests).
		for fwd.RemoveHeader("Route") {
		}
	}
	if t.ruri != nil {
		fwd.Recipient = *t.ruri
	}
	stripAlias(fwd)
	r.edgeRewrite(fwd, orig, t, recordRoute)
	for i := len(t.path) - 1; i >= 0; i-- {
		fwd.PrependHeader(gosip.NewHeader("Route", t.path[i]))
	}
	mf := gosip.MaxForwardsHeader(70)
	if h := orig.MaxForwards(); h != nil {
		mf = gosip.MaxForwardsHeader(h.Val() - 1)
	}
	// sipgo shares the Max-Forwards header between clones, so replace rather than decrement.
	if fwd.MaxForwards() != nil {
		fwd.ReplaceHeader(&mf)
	} else {
		fwd.AppendHeader(&mf)
	}
	if recordRoute {
		in := strings.ToLower(orig.Transport())
		out := strings.ToLower(t.transport)
		if _, listening := r.ports[out]; !listening {
			// No listener for the outbound transport (a backend dialled over TLS without a
			// tls: listener): an entry for it could name no port of ours, so neither side would
			// recognise it and in-dialog requests would go to the default port. The inbound
			// entry alone keeps the dialog on us.
			out = in
		}
		if in != out {
			// RFC 5658 double Record-Route: the callee's side sees the entry for the outbound
			// transport, the caller's side the inbound one.
			fwd.PrependHeader(r.recordRoute(in))
		}
		fwd.PrependHeader(r.recordRoute(out))
	}
	if v := fwd.Via(); v != nil {
		stampSource(v, orig.Source())
	}
	fwd.PrependHeader(r.newVia(t.transport, branch))
	fwd.SetTransport(t.transport)
	fwd.SetDestination(t.addr)
	r.setLocal(fwd, t.host)
	if t.laddr != "" && t.transport == "UDP" {
		if ap, err := netip.ParseAddrPort(t.laddr); err == nil {
			fwd.Laddr = gosip.Addr{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
		}
	}
}

// unreachable reports whether a target is an outside party over a stream transport whose
// connection is gone: it cannot be reached, and must not be dialled.
func (r *Router) unreachable(t target) bool {
	return t.outside && t.transport != "UDP" && !r.streamAlive(t.transport, t.addr)
}

// stampSource writes where the request really came from into the sender's Via (RFC 3261
// §18.2.1 received, RFC 3581 rport, which we set whether or not the sender asked, as Kamailio's
// force_rport does). Responses we forward statelessly, such as 2xx retransmissions, then reach
// a caller behind NAT.
func stampSource(v *gosip.ViaHeader, source string) {
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return
	}
	v.Params.Add("received", ap.Addr().Unmap().String())
	v.Params.Add("rport", strconv.Itoa(int(ap.Port())))
}

func (r *Router) recordRoute(transport string) *gosip.RecordRouteHeader {
	u := gosip.Uri{Scheme: "sip", Host: r.viaHost, Port: r.ports[transport]}
	if transport != "udp" {
		u.UriParams.Add("transport", transport)
	}
	u.UriParams.Add("lr", "")
	return &gosip.RecordRouteHeader{Address: u}
}

// relayInDialog sends an in-dialog request to its next hop. It is never re-dispatched: the
// dialog lives on the backend that answered.
func (r *Router) relayInDialog(req *gosip.Request, tx gosip.ServerTransaction, next target, log reqLog) {
	if req.Method == gosip.BYE {
		r.dialogs.end(callID(req), "bye")
	}
	r.relay(req, tx, []target{next}, false, log)
}

// branchOutcome says why a branch ended without a final answer worth relaying.
type branchOutcome int

const (
	outcomeDone     branchOutcome = iota // final answer relayed, or the caller cancelled
	outcomeFailover                      // try the next target
)

// relay forwards req statefully to the targets in order until one gives a final answer that
// is not worth failing over from. It returns only when the server transaction has its final
// response: sipgo ends the transaction when the handler returns.
func (r *Router) relay(req *gosip.Request, tx gosip.ServerTransaction, targets []target, initial bool, log reqLog) {
	cancelled := make(chan struct{})
	if req.IsInvite() {
		tx.OnCancel(func(*gosip.Request) { close(cancelled) })
	}
	dialogCreating := initial && (req.IsInvite() || req.Method == gosip.SUBSCRIBE || req.Method == gosip.REFER)
	var d *dialog
	if initial && req.IsInvite() {
		d = r.dialogs.begin(callID(req))
	}
	var last *gosip.Response
	for i, t := range targets {
		if i > 0 {
			r.m.failovers.Inc()
		}
		if d != nil {
			d.assign(t.dst)
		}
		outcome, res := r.branch(req, tx, t, dialogCreating, initial, cancelled, d, log)
		if outcome == outcomeDone {
			return
		}
		last = res
	}
	if d != nil {
		r.dialogs.fail(d)
	}
	if !initial {
		// An in-dialog request has exactly one next hop; pass on what it said, or 408.
		if last != nil {
			r.relayResponse(tx, req, last)
			return
		}
		r.reply(tx, req, 408, "Request Timeout", nil)
		return
	}
	log.Warn("every destination failed", "tried", len(targets))
	r.reply(tx, req, 503, "Service Unavailable", r.retryAfter())
}

// failoverCode reports whether a final answer means "this backend cannot take it now".
func failoverCode(code int) bool { return code == 408 || (code >= 500 && code < 600) }

func (r *Router) branch(req *gosip.Request, stx gosip.ServerTransaction, t target, dialogCreating, initial bool,
	cancelled <-chan struct{}, d *dialog, log reqLog) (branchOutcome, *gosip.Response) {
	if r.unreachable(t) {
		log.Info("party's connection is gone", "target", t.addr)
		r.m.branchFail.WithLabelValues("transport").Inc()
		return outcomeFailover, nil
	}
	fwd := forwardCopy(req)
	r.prepareForward(fwd, req, t, dialogCreating, r.branchID(req))
	backend := t.addr
	if t.dst != nil {
		backend = t.dst.URI
	}
	log.backend = backend
	start := time.Now()

	// sipgo uses this context only to set up a connection (a TCP dial); the transaction itself
	// is ours to end. UDP dials nothing, so it gets no timer.
	dialCtx, cancel := context.Background(), context.CancelFunc(func() {})
	if t.transport != "UDP" {
		dialCtx, cancel = context.WithTimeout(dialCtx, r.cfg.Timers.Response)
	}
	btx, err := r.cli.TransactionRequest(dialCtx, fwd, prebuilt)
	cancel()
	if err != nil {
		log.Warn("relay failed", "error", err)
		r.m.branchFail.WithLabelValues("transport").Inc()
		return outcomeFailover, nil
	}
	handedOff := false // true once abandon owns the client transaction
	defer func() {
		if !handedOff {
			btx.Terminate()
		}
	}()

	fr := time.NewTimer(r.cfg.Timers.Response)
	defer fr.Stop()
	var frInv <-chan time.Time
	provisional := false
	isInvite := req.IsInvite()

	for {
		select {
		case res := <-btx.Responses():
			code := int(res.StatusCode)
			if code < 200 {
				if !provisional {
					provisional = true
					fr.Stop()
					if isInvite {
						tm := time.NewTimer(r.cfg.Timers.InviteFinal)
						defer tm.Stop()
						frInv = tm.C
					}
				}
				if code > 100 {
					r.relayResponse(stx, req, res)
				}
				continue
			}
			if failoverCode(code) && initial && !closed(cancelled) {
				log.Info("backend refused, trying next", "status", code)
				r.m.branchFail.WithLabelValues(strconv.Itoa(code)).Inc()
				return outcomeFailover, res
			}
			if code < 300 && d != nil {
				r.dialogs.confirm(d, t.dst, start)
			} else if d != nil {
				r.dialogs.fail(d)
			}
			r.relayResponse(stx, req, res)
			return outcomeDone, nil

		case <-fr.C:
			// No answer at all: the backend is gone or drowning. RFC 3261 §9.1 forbids a CANCEL
			// before a provisional, so keep listening in the background and cancel late.
			log.Info("no response from backend, trying next", "after", r.cfg.Timers.Response)
			r.m.branchFail.WithLabelValues("timeout").Inc()
			handedOff = true
			go r.abandon(btx, fwd, false)
			return outcomeFailover, nil

		case <-frInv:
			log.Info("backend rang too long, cancelling", "after", r.cfg.Timers.InviteFinal)
			r.m.branchFail.WithLabelValues("ring_timeout").Inc()
			handedOff = true
			go r.abandon(btx, fwd, true)
			return outcomeFailover, nil

		case <-cancelled:
			// The transaction layer already answered the CANCEL and sent 487 upstream.
			if d != nil {
				r.dialogs.fail(d)
			}
			handedOff = true
			go r.abandon(btx, fwd, provisional)
			return outcomeDone, nil

		case <-btx.Done():
			err := btx.Err()
			reason := "timeout"
			if errors.Is(err, gosip.ErrTransactionTransport) {
				reason = "transport"
			}
			log.Info("branch failed", "reason", reason, "error", err)
			r.m.branchFail.WithLabelValues(reason).Inc()
			return outcomeFailover, nil
		}
	}
}

// reqLog logs with the request's fields (call_id, method, remote, backend), building them only
// when a record is actually written: a per-request slog.Logger.With costs an allocation and a
// pre-formatting pass on every message, logged or not.
type reqLog struct {
	log     *slog.Logger
	req     *gosip.Request
	backend string
}

func (l reqLog) emit(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, len(args)+8)
	attrs = append(attrs, "call_id", callID(l.req), "method", string(l.req.Method), "remote", l.req.Source())
	if l.backend != "" {
		attrs = append(attrs, "backend", l.backend)
	}
	l.log.Log(context.Background(), level, msg, append(attrs, args...)...)
}

func (l reqLog) Debug(msg string, args ...any) { l.emit(slog.LevelDebug, msg, args...) }
func (l reqLog) Info(msg string, args ...any)  { l.emit(slog.LevelInfo, msg, args...) }
func (l reqLog) Warn(msg string, args ...any)  { l.emit(slog.LevelWarn, msg, args...) }

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// abandon winds down a branch we no longer want: CANCEL it once it is provisional (now, or when
// its first provisional arrives), and let the transaction absorb the 487 and its ACK.
func (r *Router) abandon(tx gosip.ClientTransaction, fwd *gosip.Request, provisional bool) {
	defer tx.Terminate()
	if !fwd.IsInvite() {
		return
	}
	sent := false
	cancelIt := func() {
		if sent {
			return
		}
		sent = true
		r.sendCancel(fwd)
	}
	if provisional {
		cancelIt()
	}
	deadline := time.NewTimer(64 * gosip.T1)
	defer deadline.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				cancelIt()
				continue
			}
			if res.IsSuccess() {
				// The backend answered after we gave up: end that call rather than leave a
				// channel up on it that nobody will ever hang up.
				r.log.Warn("late 2xx on an abandoned branch, hanging it up", "call_id", callID(fwd))
				r.m.branchFail.WithLabelValues("late_answer").Inc()
				r.hangUpLate(fwd, res)
			}
			return
		case <-tx.Done():
			return
		case <-deadline.C:
			return
		}
	}
}

// hangUpLate acknowledges a 2xx that arrived on a branch we had abandoned, and sends BYE
// (RFC 3261 §16.7: a proxy that no longer wants a call it forwarded must still ACK and end it).
// Both go straight to the backend's Contact: the backend is our next hop, so no route set.
func (r *Router) hangUpLate(fwd *gosip.Request, res *gosip.Response) {
	contact := res.Contact()
	if contact == nil {
		return
	}
	build := func(method gosip.RequestMethod, seq uint32) *gosip.Request {
		req := gosip.NewRequest(method, contact.Address)
		req.AppendHeader(r.newVia(fwd.Transport(), gosip.GenerateBranchN(16)))
		mf := gosip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
		req.AppendHeader(gosip.HeaderClone(res.From()))
		req.AppendHeader(gosip.HeaderClone(res.To()))
		req.AppendHeader(gosip.HeaderClone(res.CallID()))
		cseq := gosip.CSeqHeader{SeqNo: seq, MethodName: method}
		req.AppendHeader(&cseq)
		req.SetBody(nil)
		req.SetTransport(fwd.Transport())
		req.SetDestination(fwd.Destination())
		req.Laddr = fwd.Laddr
		return req
	}
	seq := fwd.CSeq().SeqNo
	if err := r.cli.WriteRequest(build(gosip.ACK, seq), prebuilt); err != nil {
		r.log.Warn("ACK for late 2xx failed", "call_id", callID(fwd), "error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 64*gosip.T1)
	defer cancel()
	tx, err := r.cli.TransactionRequest(ctx, build(gosip.BYE, seq+1), prebuilt)
	if err != nil {
		r.log.Warn("BYE for late 2xx failed", "call_id", callID(fwd), "error", err)
		return
	}
	defer tx.Terminate()
	_, _ = finalResponse(ctx, tx) // whatever it answers, the call is over for us
}

// sendCancel builds the CANCEL for a branch we forwarded (RFC 3261 §9.1): same Request-URI,
// Call-ID, From, To, Route, CSeq number and our Via with its branch.
func (r *Router) sendCancel(fwd *gosip.Request) {
	c := gosip.NewRequest(gosip.CANCEL, fwd.Recipient)
	c.AppendHeader(gosip.HeaderClone(fwd.Via()))
	for _, h := range fwd.GetHeaders("Route") {
		c.AppendHeader(gosip.HeaderClone(h))
	}
	mf := gosip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(gosip.HeaderClone(fwd.From()))
	c.AppendHeader(gosip.HeaderClone(fwd.To()))
	c.AppendHeader(gosip.HeaderClone(fwd.CallID()))
	cseq := gosip.CSeqHeader{SeqNo: fwd.CSeq().SeqNo, MethodName: gosip.CANCEL}
	c.AppendHeader(&cseq)
	c.SetBody(nil)
	c.SetTransport(fwd.Transport())
	c.SetDestination(fwd.Destination())
	c.Laddr = fwd.Laddr
	ctx, cancel := context.WithTimeout(context.Background(), 64*gosip.T1)
	defer cancel()
	tx, err := r.cli.TransactionRequest(ctx, c, prebuilt)
	if err != nil {
		r.log.Warn("send CANCEL failed", "call_id", callID(fwd), "error", err)
		return
	}
	defer tx.Terminate()
	_, _ = finalResponse(ctx, tx) // the INVITE branch sees the outcome (487 or the answer)
}

// relayResponse strips our Via and passes the response upstream through the server transaction,
// to the address the request came from (RFC 3581 symmetric response routing, which phones
// behind NAT need whether or not they asked for rport).
//
// The response is edited in place: the client transaction has handed it over and keeps no use
// for it.
func (r *Router) relayResponse(tx gosip.ServerTransaction, req *gosip.Request, res *gosip.Response) {
	out := res
	out.RemoveHeader("Via")
	if out.Via() == nil {
		// We took the cluster's Vias off the request (topology hiding): the answer gets them
		// back from the request as we received it.
		for _, v := range req.GetHeaders("Via") {
			out.AppendHeader(v)
		}
	}
	r.edgeRewriteResponse(out, req)
	out.SetDestination(req.Source())
	r.m.replies.WithLabelValues(methodLabel(string(res.CSeq().MethodName)), strconv.Itoa(int(res.StatusCode))).Inc()
	if err := tx.Respond(out); err != nil {
		r.log.Debug("relay response failed", "call_id", callID(res), "status", res.StatusCode, "error", err)
	}
}

// onStrayResponse handles responses that match no client transaction, mostly 2xx
// retransmissions after the INVITE transaction ended: RFC 3261 §16.7 forwards them statelessly
// when the top Via is ours.
func (r *Router) onStrayResponse(res *gosip.Response) {
	via := res.Via()
	if via == nil || !r.self[hostPortKey(via.Host, via.Port)] {
		return
	}
	out := res.Clone()
	out.RemoveHeader("Via")
	next := out.Via()
	if next == nil {
		return
	}
	host := next.Host
	port := next.Port
	if rcv, ok := next.Params.Get("received"); ok && rcv != "" {
		host = rcv
	}
	if rp, ok := next.Params.Get("rport"); ok && rp != "" {
		if p, err := strconv.Atoi(rp); err == nil {
			port = p
		}
	}
	if port == 0 {
		port = 5060
	}
	out.SetTransport(strings.ToUpper(next.Transport))
	out.SetDestination(hostPortKey(host, port))
	if err := r.srv.WriteResponse(out); err != nil {
		r.log.Debug("stateless response forward failed", "call_id", callID(res), "error", err)
	}
}

// reply sends a locally generated final response.
func (r *Router) reply(tx gosip.ServerTransaction, req *gosip.Request, code int, reason string, extra []gosip.Header) {
	res := gosip.NewResponseFromRequest(req, code, reason, nil)
	res.SetDestination(req.Source()) // symmetric, as relayed responses (see relayResponse)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	r.m.replies.WithLabelValues(methodLabel(string(req.Method)), strconv.Itoa(code)).Inc()
	if err := tx.Respond(res); err != nil {
		r.log.Debug("respond failed", "call_id", callID(req), "status", code, "error", err)
	}
}

func (r *Router) replyOptions(tx gosip.ServerTransaction, req *gosip.Request) {
	r.reply(tx, req, 200, "OK", []gosip.Header{
		gosip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY, SUBSCRIBE, MESSAGE, PRACK"),
	})
}

func (r *Router) retryAfter() []gosip.Header {
	return []gosip.Header{gosip.NewHeader("Retry-After", strconv.Itoa(r.cfg.RetryAfter))}
}

// Loop detection (RFC 3261 §16.3 step 4, §16.6 step 8). Our branch carries a hash of the
// values that identify the request as we received it; if a request arrives carrying one of
// our Vias whose hash equals the one this request would get, it has come back unchanged: a
// loop, not a spiral.
const branchPrefix = "z9hG4bK-dg"

func (r *Router) branchID(req *gosip.Request) string {
	return branchPrefix + loopHash(req) + "." + gosip.GenerateTagN(10)
}

func loopHash(req *gosip.Request) string {
	h := uint64(14695981039346656037)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	add(req.Recipient.String())
	add(callID(req))
	if f := req.From(); f != nil {
		add(f.Params.GetOr("tag", ""))
	}
	if t := req.To(); t != nil {
		add(t.Params.GetOr("tag", ""))
	}
	if c := req.CSeq(); c != nil {
		add(strconv.FormatUint(uint64(c.SeqNo), 10))
	}
	for _, rt := range req.GetHeaders("Route") {
		add(rt.Value())
	}
	var b [8]byte
	for i := range b {
		b[i] = byte(h >> (8 * i))
	}
	return hex.EncodeToString(b[:])
}

func (r *Router) isLoop(req *gosip.Request) bool {
	var want string
	for _, h := range req.GetHeaders("Via") {
		v, ok := h.(*gosip.ViaHeader)
		if !ok || !r.self[hostPortKey(v.Host, v.Port)] {
			continue
		}
		b, _ := v.Params.Get("branch")
		rest, ok := strings.CutPrefix(b, branchPrefix)
		if !ok {
			continue
		}
		got, _, _ := strings.Cut(rest, ".")
		if want == "" {
			want = loopHash(req)
		}
		if got == want {
			return true
		}
	}
	return false
}

// statelessBranch derives the branch for a statelessly forwarded ACK from the one it arrived
// with, so a retransmitted ACK gets the same branch (RFC 3261 §16.11).
func statelessBranch(req *gosip.Request) string {
	b := ""
	if v := req.Via(); v != nil {
		b, _ = v.Params.Get("branch")
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i])
		h *= 1099511628211
	}
	return "z9hG4bK-dgs" + strconv.FormatUint(h, 16)
}

func callID(m gosip.Message) string {
	if c := m.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

// methodLabel bounds the method label's cardinality: RFC 4475's intmeth shows a method can be
// any token.
func methodLabel(m string) string {
	switch m {
	case "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "REFER",
		"NOTIFY", "SUBSCRIBE", "MESSAGE", "PRACK", "PUBLISH":
		return m
	}
	return "other"
}

// sanityAnswer picks the status and reason phrase for a request the sanity stage refused.
func sanityAnswer(err error) (int, string) {
	var se *sanity.Error
	if errors.As(err, &se) && se.Status != 0 {
		return se.Status, se.Reason
	}
	return 400, "Bad Request"
}

// digestUsername pulls username="..." out of a Proxy-Authorization value for algorithm 5.
func digestUsername(v string) string {
	i := strings.Index(strings.ToLower(v), "username=")
	if i < 0 {
		return ""
	}
	s := v[i+len("username="):]
	if strings.HasPrefix(s, `"`) {
		s = s[1:]
		if j := strings.IndexByte(s, '"'); j >= 0 {
			return s[:j]
		}
		return s
	}
	if j := strings.IndexAny(s, ", "); j >= 0 {
		return s[:j]
	}
	return s
}
