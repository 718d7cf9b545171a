package guard

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The scanner must agree with the obvious (allocating) definition on any input.
func TestScannerMatchesReference(t *testing.T) {
	s, err := newScanner(DefaultScannerUserAgents())
	if err != nil {
		t.Fatal(err)
	}
	ref := func(ua string) bool {
		ua = strings.ToLower(truncate(ua, maxUALen))
		for _, n := range DefaultScannerUserAgents() {
			if strings.Contains(ua, strings.ToLower(n)) {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewPCG(1, 2))
	pieces := append(DefaultScannerUserAgents(), "SIP", "sip", "scan", "-", "Ya", "iwa", "IWA", "VaxSIP", "\xff", " ")
	for range 20000 {
		var b strings.Builder
		for range r.IntN(6) {
			p := pieces[r.IntN(len(pieces))]
			if r.IntN(2) == 0 {
				p = strings.ToUpper(p)
			}
			if r.IntN(3) == 0 && len(p) > 1 {
				p = p[:r.IntN(len(p))] // near misses
			}
			b.WriteString(p)
		}
		ua := b.String()
		if got, want := s.match(ua), ref(ua); got != want {
			t.Fatalf("match(%q) = %v, want %v", ua, got, want)
		}
		if got := s.match(ua); got != ref(ua) { // again, from the cache
			t.Fatalf("cached match(%q) = %v", ua, got)
		}
	}
}
