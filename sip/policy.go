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
)

func (c sourceClass) String() string {
	switch c {
	case sourceCluster:
		return "cluster"
	case sourceTrunk:
		return "trunk"
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
