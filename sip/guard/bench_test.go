package guard

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks use the real clock: reading it is part of what Check costs.

func benchGuard(b *testing.B, cfg Config) *Guard {
	b.Helper()
	g, err := New(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkCheckKnownSource is the steady state: a source already tracked, under its limit,
// with a phone's User-Agent; then the drop paths a flood goes through.
func BenchmarkCheckKnownSource(b *testing.B) {
	run := func(b *testing.B, g *Guard, src netip.Addr, ua string, want Verdict) {
		if v := g.Check(src, ua); v != want {
			b.Fatalf("verdict %v, want %v", v, want)
		}
		b.ReportAllocs()
		for b.Loop() {
			g.Check(src, ua)
		}
	}
	allow := DefaultConfig()
	allow.Rate, allow.Burst = 1e12, 1<<30 // never runs dry: measure the allow path
	b.Run("allow", func(b *testing.B) { run(b, benchGuard(b, allow), srcA, phoneUA, Allow) })
	b.Run("allow-ipv6", func(b *testing.B) {
		run(b, benchGuard(b, allow), netip.MustParseAddr("2001:db8:1:2::1"), phoneUA, Allow)
	})
	classes := allow
	classes.Exempt = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for i := range 8 {
		classes.Classes = append(classes.Classes, Class{Name: "trunk",
			Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i), 0}), 24)},
			Rate:     1e12, Burst: 1 << 30})
	}
	b.Run("allow-10-prefixes", func(b *testing.B) { run(b, benchGuard(b, classes), srcA, phoneUA, Allow) })
	b.Run("scanner", func(b *testing.B) { run(b, benchGuard(b, allow), srcA, "friendly-scanner", Scanner) })
	limited := DefaultConfig()
	limited.Rate, limited.Burst, limited.Strikes = 1, 1, 0
	b.Run("limited", func(b *testing.B) {
		g := benchGuard(b, limited)
		g.Check(srcA, phoneUA)
		run(b, g, srcA, phoneUA, Limited)
	})
	b.Run("banned", func(b *testing.B) {
		g := benchGuard(b, DefaultConfig())
		g.Check(srcA, phoneUA)
		if _, err := g.Ban(srcA, time.Hour, ""); err != nil {
			b.Fatal(err)
		}
		run(b, g, srcA, phoneUA, Banned)
	})
}

// BenchmarkCheckManySources spreads calls from all cores over 50000 tracked sources, then
// over a flood of never-seen sources that keeps the table at MaxSources and evicting.
func BenchmarkCheckManySources(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Rate, cfg.Burst = 1e12, 1<<30
	srcs := make([]netip.Addr, 50000)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
	}
	b.Run("known", func(b *testing.B) {
		g := benchGuard(b, cfg)
		for _, s := range srcs {
			g.Check(s, phoneUA)
		}
		var seq atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seq.Add(7919) // goroutines start in different places
			for pb.Next() {
				g.Check(srcs[i%uint64(len(srcs))], phoneUA)
				i++
			}
		})
	})
	b.Run("spoofed-flood", func(b *testing.B) {
		c := cfg
		c.MaxSources = 10000
		g := benchGuard(b, c)
		var seq atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			n := seq.Add(1) << 24
			for pb.Next() {
				n++
				g.Check(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), phoneUA)
			}
		})
	})
}

// BenchmarkScan is the uncached User-Agent scan Check avoids for repeated strings.
func BenchmarkScan(b *testing.B) {
	s, err := newScanner(DefaultScannerUserAgents())
	if err != nil {
		b.Fatal(err)
	}
	for _, ua := range []string{phoneUA, "Linphone/5.2.0 (belle-sip/5.2.0)", "friendly-scanner"} {
		b.Run(ua, func(b *testing.B) {
			for b.Loop() {
				s.scan(ua)
			}
		})
	}
}
