package guard

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// DefaultScannerUserAgents returns the default scanner list. Each entry is the User-Agent of
// a tool that exists to find and attack SIP servers, so no phone, PBX or carrier sends it:
//
//   - friendly-scanner: SIPVicious' historic default (svmap, svwar, svcrack); still the
//     most common UA in SIP attack traffic.
//   - sipvicious: what later SIPVicious releases put in the UA.
//   - sipcli: a command-line SIP client seen mostly in scripted password guessing.
//   - sip-scan: a scanner name in nearly every SIP block list; no product uses it.
//   - sundayddr: a scanner seen in the wild since the early 2010s.
//   - iWar: a war dialer with a SIP mode.
//   - VaxSIPUserAgent: the default UA of the VaxVoIP SDK, left unchanged by mass scanners.
//     A real product built on that SDK sets its own name.
//   - pplsip: the default UA of SIPPTS, a SIP penetration-testing toolkit.
//
// Left out on purpose: sipsak, sipp and nmap (admin, load-test and audit tools that operators
// run against their own systems; exempt their sources instead), and UAs that scanners spoof
// but real devices also send (Asterisk PBX, PortSIP, Cisco).
func DefaultScannerUserAgents() []string {
	return []string{"friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iWar",
		"VaxSIPUserAgent", "pplsip"}
}

// maxUALen bounds the User-Agent bytes looked at. Scanners put their name first, and a
// sender of 60 kB User-Agents should not cost a 60 kB scan per request.
const maxUALen = 256

// scanner finds scanner names in User-Agents (ASCII case-insensitive substring). A scan
// costs a few nanoseconds per byte, more than the rest of Check together, so verdicts are
// cached by hash: the same few User-Agent strings come from thousands of phones.
type scanner struct {
	needles []string     // lower case
	first   [256]uint64  // bit i: needles[i] starts with this byte, in either case
	seed    maphash.Seed // random per process: cache collisions cannot be aimed
	// cache is direct-mapped: a slot holds the hash with bit 0 replaced by the verdict.
	// A stale or colliding slot only costs a scan.
	cache [1024]atomic.Uint64
}

func newScanner(uas []string) (*scanner, error) {
	if len(uas) == 0 {
		return nil, nil
	}
	if len(uas) > 64 {
		return nil, errors.New("guard: at most 64 scanner user agents")
	}
	s := &scanner{seed: maphash.MakeSeed()}
	for i, ua := range uas {
		if ua == "" {
			return nil, fmt.Errorf("guard: scanner user agent %d is empty (it would match every request)", i)
		}
		if len(ua) > maxUALen {
			return nil, fmt.Errorf("guard: scanner user agent %q is longer than %d bytes", ua, maxUALen)
		}
		n := lowerASCII(ua)
		s.needles = append(s.needles, n)
		s.first[n[0]] |= 1 << i
		s.first[upperASCII(n[0])] |= 1 << i
	}
	return s, nil
}

// match reports whether ua names a scanner.
func (s *scanner) match(ua string) bool {
	if len(ua) > maxUALen {
		ua = ua[:maxUALen]
	}
	h := maphash.String(s.seed, ua)
	slot := &s.cache[h>>54]
	if v := slot.Load(); v != 0 && v|1 == h|1 {
		return v&1 == 1
	}
	hit := s.scan(ua)
	v := h &^ 1
	if hit {
		v |= 1
	}
	slot.Store(v)
	return hit
}

func (s *scanner) scan(ua string) bool {
	for i := 0; i < len(ua); i++ {
		for m := s.first[ua[i]]; m != 0; m &= m - 1 {
			if hasFoldPrefix(ua[i:], s.needles[bits.TrailingZeros64(m)]) {
				return true
			}
		}
	}
	return false
}

// hasFoldPrefix reports whether s starts with lower, ignoring ASCII case in s.
func hasFoldPrefix(s, lower string) bool {
	if len(s) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func upperASCII(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}
