package sip

import (
	"net/netip"
	"strings"

	gosip "github.com/emiago/sipgo/sip"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// Source policy: who may send what. The gateway is never an open relay: a request for a new
// call or registration comes from the cluster (a dispatcher destination's address), from a
// trusted network, from a trunk (by source address), or from a user who proves who they are
// with digest auth. Anyone else gets a challenge, and without credentials never reaches a
// backend.

type sourceClass int

const (
	sourceUntrusted sourceClass = iota
	sourceCluster               // a dispatcher destination, or sip.trusted
	sourceTrunk                 // a carrier listed in sip.trunks
	sourceAgent                 // a browser agent on its bridge stream, authenticated by its JWT
)

func (c sourceClass) String() string {
	switch c {
	case sourceCluster:
		return "cluster"
	case sourceTrunk:
		return "trunk"
	case sourceAgent:
		return "agent"
	}
	return "untrusted"
}

// trunk is a compiled TrunkConfig.
type trunk struct {
	name    string
	sources []netip.Prefix
	set     int
	alg     dispatcher.Algorithm
}

func compileTrunks(cfgs []TrunkConfig) []trunk {
	out := make([]trunk, 0, len(cfgs))
	for _, c := range cfgs {
		p, _ := parsePrefixes(c.Sources) // validated
		set := c.Set
		if set == 0 {
			set = 1
		}
		out = append(out, trunk{name: c.Name, sources: p, set: set, alg: dispatcher.Algorithm(c.Algorithm)})
	}
	return out
}

// classify says which kind of peer sent a request from ip. A trunk listing wins over the
// cluster, so a trunk whose address is also a destination still lands in its own set.
func (r *Router) classify(ip netip.Addr) (sourceClass, *trunk) {
	ip = ip.Unmap()
	for i := range r.trunks {
		for _, p := range r.trunks[i].sources {
			if p.Contains(ip) {
				return sourceTrunk, &r.trunks[i]
			}
		}
	}
	if r.disp != nil && r.disp.IsDestination(ip) {
		return sourceCluster, nil
	}
	for _, p := range r.trusted {
		if p.Contains(ip) {
			return sourceCluster, nil
		}
	}
	return sourceUntrusted, nil
}

// outsideParty reports whether a class is a phone or an agent: NATed, reachable only where
// it came from.
func outsideParty(c sourceClass) bool { return c == sourceUntrusted || c == sourceAgent }

// classOf classifies a message by its source, recognising agent streams.
func (r *Router) classOf(m interface {
	Transport() string
	Source() string
}) sourceClass {
	if _, ok := r.agentOf(m.Transport(), m.Source()); ok {
		return sourceAgent
	}
	ap, err := netip.ParseAddrPort(m.Source())
	if err != nil {
		return sourceUntrusted
	}
	c, _ := r.classify(ap.Addr())
	return c
}

// isOurDomain reports whether a Request-URI host means this gateway: a listener or advertised
// address, or one of sip.domains.
func (r *Router) isOurDomain(u *gosip.Uri) bool {
	if r.domains[strings.ToLower(u.Host)] {
		return true
	}
	host := strings.ToLower(strings.Trim(u.Host, "[]"))
	if host == strings.ToLower(strings.Trim(r.viaHost, "[]")) {
		return true
	}
	return r.isSelf(u) || r.selfHosts[host]
}
