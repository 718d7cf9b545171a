package sip

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	gosip "github.com/emiago/sipgo/sip"

	"github.com/dualgate/dualgate/sip/auth"
	"github.com/dualgate/dualgate/sip/guard"
	"github.com/dualgate/dualgate/sip/registrar"
)

// The edge stages of the routing chain: registration, digest authentication of callers, and
// calls to registered users.

// Directory is the users the SIP plane registers, authenticates and calls (the users file).
type Directory interface {
	// HA1 returns the user's hex HA1 for "MD5" or "SHA-256".
	HA1(user, algorithm string) (string, bool)
	// Exists reports whether user is a known user (an AOR of this gateway).
	Exists(user string) bool
}

// buildEdge makes the registrar, location store, authenticator, guard and topology hiding
// from the config.
func (r *Router) buildEdge(reg prometheus.Registerer) error {
	c := r.cfg
	r.loc = registrar.NewMemoryStore(nil, registrar.WithExpiryHook(func(expired []registrar.Binding) {
		for _, b := range expired {
			r.log.Info("binding expired", "user", b.AOR, "contact", b.Contact.String())
		}
	}))
	r.reg = registrar.New(registrar.Config{MinExpires: c.Registrar.MinExpires, MaxExpires: c.Registrar.MaxExpires,
		DefaultExpires: c.Registrar.DefaultExpires, MaxContacts: c.Registrar.MaxContacts},
		r.loc, registrar.WithMetrics(reg))
	if r.users != nil {
		ac := auth.Config{Realm: c.Auth.Realm, Algorithms: c.Auth.Algorithms, NonceTTL: c.Auth.NonceTTL}
		if err := ac.Validate(); err != nil {
			return fmt.Errorf("sip.auth: %w", err)
		}
		r.auth = auth.New(ac, r.users)
	}
	gc := guard.DefaultConfig()
	gc.Rate, gc.Burst, gc.BanTime = c.Guard.Rate, c.Guard.Burst, c.Guard.BanTime
	gc.AuthFailures, gc.AuthWindow = c.Guard.AuthFailures, c.Guard.AuthWindow
	if c.Guard.ScannerUserAgents != nil {
		gc.ScannerUserAgents = c.Guard.ScannerUserAgents
	}
	gc.Exempt = r.trusted
	for i, t := range c.Trunks {
		rate, burst := t.Rate, t.Burst
		if rate == 0 {
			rate, burst = 500, 1000
		}
		gc.Classes = append(gc.Classes, guard.Class{Name: t.Name, Prefixes: r.trunks[i].sources, Rate: rate, Burst: burst})
	}
	gc.OnBan = func(b guard.Ban) {
		r.log.Warn("source banned", "remote", b.Prefix().String(), "reason", b.Reason, "until", b.Until)
	}
	g, err := guard.New(gc, nil, reg)
	if err != nil {
		return fmt.Errorf("sip.guard: %w", err)
	}
	r.guard = g
	if c.TopologyHiding {
		if r.topo, err = newTopology(); err != nil {
			return err
		}
	}
	if c.TLS.CertFile != "" {
		if r.tlsConf, err = serverTLS(c.TLS); err != nil {
			return err
		}
	}
	return nil
}

// onRegister handles a REGISTER for our domain: digest auth (401), the authenticated user
// must be the AOR (403), then the registrar. From the cluster and sip.trusted (say, an SBC
// that authenticated the phone already) no digest is asked, as Kamailio's allow_trusted; the
// AOR must still be a user.
// identity is what the source policy already knows about a REGISTER's sender.
type identity struct {
	trusted bool   // the cluster or sip.trusted
	agent   string // the user whose agent stream it came on, "" if none
}

func (r *Router) onRegister(req *gosip.Request, tx gosip.ServerTransaction, src netip.Addr, id identity, log reqLog) {
	if r.users == nil {
		r.m.rejected.WithLabelValues("no_users").Inc()
		r.reply(tx, req, 403, "Registration Not Enabled", nil)
		return
	}
	to := req.To()
	var user string
	switch {
	case id.agent != "":
		if to == nil || to.Address.User != id.agent {
			r.m.auth.WithLabelValues("from_mismatch").Inc()
			log.Warn("agent registering as someone else", "user", id.agent)
			r.reply(tx, req, 403, "Forbidden", nil)
			return
		}
		user = id.agent
	case id.trusted:
		if to == nil || !r.users.Exists(to.Address.User) {
			r.m.rejected.WithLabelValues("unknown_user").Inc()
			r.reply(tx, req, 404, "Not Found", nil)
			return
		}
		user = to.Address.User
	default:
		var ok bool
		if user, ok = r.authenticate(req, tx, src, "Authorization", log); !ok {
			return
		}
		if to == nil || to.Address.User != user {
			r.m.auth.WithLabelValues("from_mismatch").Inc()
			log.Warn("REGISTER for another user refused", "user", user)
			r.reply(tx, req, 403, "Forbidden", nil)
			return
		}
	}
	res := r.reg.Register(req, user, r.regSource(req))
	if res.Status >= 300 {
		log.Info("registration refused", "user", user, "status", res.Status, "reason", res.Reason)
	} else {
		log.Debug("registered", "user", user, "bindings", len(res.Bindings))
	}
	r.reply(tx, req, res.Status, res.Reason, res.Headers)
}

// regSource is where a REGISTER really came from: its binding keeps it for NAT traversal.
func (r *Router) regSource(req *gosip.Request) registrar.Source {
	src := registrar.Source{Transport: strings.ToUpper(req.Transport())}
	src.Addr, _ = netip.ParseAddrPort(req.Source())
	if _, agent := r.agentOf(req.Transport(), req.Source()); agent {
		// An agent's stream: shown as WS, reached through the router's TCP pool.
		src.Transport, src.ConnID = "WS", connID("tcp", req.Source())
	} else if src.Transport != "UDP" {
		src.ConnID = connID(src.Transport, req.Source())
	} else if a, ok := r.udpLocal[src.Addr.Addr().Is6() && !src.Addr.Addr().Is4In6()]; ok {
		src.LocalAddr = a.String()
	}
	return src
}

// authenticate checks the request's digest credentials. It answers the request itself (401 or
// 407 challenge, 403, 400) and returns false unless the user proved who they are.
func (r *Router) authenticate(req *gosip.Request, tx gosip.ServerTransaction, src netip.Addr, header string, log reqLog) (string, bool) {
	var creds []string
	for _, h := range req.GetHeaders(header) {
		creds = append(creds, h.Value())
	}
	res := r.auth.Verify(string(req.Method), creds, src)
	switch res.Status {
	case auth.OK:
		r.m.auth.WithLabelValues("ok").Inc()
		r.guard.AuthSucceeded(src, res.User)
		return res.User, true
	case auth.Missing:
		r.m.auth.WithLabelValues("challenged").Inc()
		r.challenge(req, tx, src, header, false)
	case auth.Stale:
		r.m.auth.WithLabelValues("stale").Inc()
		r.challenge(req, tx, src, header, true)
	case auth.Unproven:
		// A nonce we did not send to this source: nothing shows the sender ever saw a
		// challenge here, and over UDP the address may be spoofed. Counting it would let
		// anyone get a phone's (or an office NAT's) address banned, or heat up a user's
		// per-user count, blind. So no guard call; a fresh challenge to this address, with
		// nothing said about why (a real client whose address changed just answers it), and
		// debug only: these cost an attacker nothing, so a log line each would be a flood.
		r.m.auth.WithLabelValues("unproven").Inc()
		log.Debug("digest answer on a nonce not issued to this source", "user", res.User, "reason", res.Reason)
		r.challenge(req, tx, src, header, false)
	case auth.Malformed:
		r.m.auth.WithLabelValues("malformed").Inc()
		r.reply(tx, req, 400, "Bad Authorization Header", nil)
	default:
		r.m.auth.WithLabelValues("failed").Inc()
		banned := r.guard.AuthFailed(src, res.User)
		log.Warn("digest authentication failed", "user", res.User, "reason", res.Reason, "banned", banned)
		// A fresh challenge, not 403: a phone whose password was just changed retries with the
		// right one. Repeated failures end in a ban by the guard.
		r.challenge(req, tx, src, header, false)
	}
	return "", false
}

// challenge answers 401/407 with a nonce bound to dst, where the response goes (responses go
// back to the request's source).
func (r *Router) challenge(req *gosip.Request, tx gosip.ServerTransaction, dst netip.Addr, header string, stale bool) {
	code, reason, name := 401, "Unauthorized", "WWW-Authenticate"
	if header == "Proxy-Authorization" {
		code, reason, name = 407, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	var hs []gosip.Header
	for _, v := range r.auth.Challenge(stale, dst) {
		hs = append(hs, gosip.NewHeader(name, v))
	}
	r.reply(tx, req, code, reason, hs)
}

// userTargets turns a user's bindings into fork targets: each goes to where its REGISTER came
// from (NAT), over the connection it came on, with the Contact as Request-URI.
func (r *Router) userTargets(aor string) []target {
	bs := r.loc.Lookup(aor)
	out := make([]target, 0, len(bs))
	for _, b := range bs {
		t := target{outside: true, transport: b.Transport, laddr: b.LocalAddr}
		if t.transport == "WS" || t.transport == "WSS" {
			t.transport = "TCP" // the agent's bridge stream
		}
		contact := b.Contact
		t.ruri = &contact
		if len(b.Path) > 0 {
			// RFC 3327: the binding is reached through the proxies on its Path.
			var first gosip.Uri
			if err := gosip.ParseUri(strings.Trim(b.Path[0], "<>"), &first); err != nil {
				continue
			}
			t = uriTarget(&first)
			t.ruri, t.path, t.outside = &contact, b.Path, false
		} else if b.Source.IsValid() {
			t.addr = b.Source.String()
			t.host = b.Source.Addr().Unmap().String()
		} else {
			ct := uriTarget(&contact)
			t.addr, t.host = ct.addr, ct.host
		}
		out = append(out, t)
	}
	return out
}

// Bindings returns every current registration (for the admin API).
func (r *Router) Bindings() []registrar.Binding { return r.loc.All() }

// Bans returns the active bans of the flood guard (for the admin API).
func (r *Router) Bans() []guard.Ban { return r.guard.Bans() }

// LiftBan ends the ban covering ip and reports whether there was one.
func (r *Router) LiftBan(ip netip.Addr) bool {
	lifted := r.guard.Lift(ip)
	if lifted {
		r.log.Info("ban lifted", "remote", ip.String())
	}
	return lifted
}
