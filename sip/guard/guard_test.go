package guard

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testConfig is DefaultConfig with small numbers that are easy to count in a test.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Rate, cfg.Burst = 10, 5
	cfg.BanTime = time.Minute
	cfg.AuthFailures, cfg.AuthFailuresUser = 5, 5
	return cfg
}

type harness struct {
	*Guard
	clock *fakeClock
	reg   *prometheus.Registry
	mu    sync.Mutex
	bans  []Ban
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), reg: prometheus.NewRegistry()}
	cfg.OnBan = func(b Ban) {
		h.mu.Lock()
		h.bans = append(h.bans, b)
		h.mu.Unlock()
	}
	g, err := New(cfg, h.clock.Now, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.Guard = g
	return h
}

func (h *harness) onBans() []Ban {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Ban(nil), h.bans...)
}

// metric reads one series from the harness registry (0 when absent).
func (h *harness) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

var (
	srcA = netip.MustParseAddr("198.51.100.1")
	srcB = netip.MustParseAddr("198.51.100.2")
)

const phoneUA = "Yealink SIP-T46S 66.86.0.15"

func count(g *Guard, src netip.Addr, n int) map[Verdict]int {
	got := map[Verdict]int{}
	for range n {
		got[g.Check(src, phoneUA)]++
	}
	return got
}

func TestRateLimitIsPerSource(t *testing.T) {
	cfg := testConfig()
	cfg.Strikes = 0
	h := newHarness(t, cfg)
	if got := count(h.Guard, srcA, 8); got[Allow] != 5 || got[Limited] != 3 {
		t.Fatalf("A: %v, want the burst of 5 allowed and 3 limited", got)
	}
	if got := count(h.Guard, srcB, 5); got[Allow] != 5 {
		t.Fatalf("B while A floods: %v, want all allowed", got)
	}
	// 10/s: one token back every 100ms.
	h.clock.Advance(100 * time.Millisecond)
	if got := count(h.Guard, srcA, 2); got[Allow] != 1 || got[Limited] != 1 {
		t.Fatalf("A after 100ms: %v, want one more allowed", got)
	}
	h.clock.Advance(time.Hour)
	if got := count(h.Guard, srcA, 6); got[Allow] != 5 {
		t.Fatalf("A after an hour: %v, want a full burst (and no more)", got)
	}
	if v := h.metric(t, "gateway_sip_guard_dropped_total", "reason", "rate"); v != 5 {
		t.Errorf("dropped{rate} = %v, want 5", v)
	}
	if len(h.Bans()) != 0 {
		t.Errorf("Strikes 0 must never ban: %v", h.Bans())
	}
}

func TestFloodGetsBannedThenReleased(t *testing.T) {
	h := newHarness(t, testConfig()) // 10/s burst 5, 3 strikes in 10s, ban 1m
	// 50 requests/s in 10ms steps: five times the rate.
	var bannedAt time.Duration
	for step := time.Duration(0); step < 10*time.Second; step += 10 * time.Millisecond {
		h.clock.Advance(10 * time.Millisecond)
		if v := h.Check(srcA, phoneUA); v == Banned {
			bannedAt = step
			break
		}
	}
	// Over the limit from about 125ms, strikes at ~0.125s, ~1.125s, ~2.125s.
	if bannedAt < 2*time.Second || bannedAt > 3*time.Second {
		t.Fatalf("banned after %v of flood, want between 2s and 3s", bannedAt)
	}
	bans := h.onBans()
	if len(bans) != 1 || bans[0].Reason != ReasonFlood || bans[0].Addr != srcA {
		t.Fatalf("OnBan got %+v, want one flood ban of %v", bans, srcA)
	}
	if d := bans[0].Until.Sub(bans[0].Since); d != time.Minute {
		t.Errorf("ban lasts %v, want BanTime", d)
	}
	if v := h.metric(t, "gateway_sip_guard_bans_total", "reason", "flood"); v != 1 {
		t.Errorf("bans_total{flood} = %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_banned"); v != 1 {
		t.Errorf("banned gauge = %v", v)
	}
	// Banned even though its bucket has long refilled, and flooding on does not extend it.
	h.clock.Advance(30 * time.Second)
	if got := count(h.Guard, srcA, 100); got[Banned] != 100 {
		t.Fatalf("30s into the ban: %v", got)
	}
	if got := count(h.Guard, srcB, 1); got[Allow] != 1 {
		t.Fatalf("another source during the ban: %v", got)
	}
	h.clock.Advance(bans[0].Until.Sub(h.clock.Now()) - time.Nanosecond)
	if v := h.Check(srcA, phoneUA); v != Banned {
		t.Fatalf("1ns before the end: %v", v)
	}
	h.clock.Advance(time.Nanosecond)
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatalf("after BanTime: %v, want Allow", v)
	}
	h.Sweep()
	if v := h.metric(t, "gateway_sip_guard_banned"); v != 0 {
		t.Errorf("banned gauge after expiry and sweep = %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_dropped_total", "reason", "banned"); v < 101 {
		t.Errorf("dropped{banned} = %v", v)
	}
}

func TestShortBurstIsDroppedNotBanned(t *testing.T) {
	h := newHarness(t, testConfig())
	// A phone's retransmission storm: far over the limit, but within two seconds.
	if got := count(h.Guard, srcA, 200); got[Limited] != 195 {
		t.Fatalf("burst: %v", got)
	}
	h.clock.Advance(1500 * time.Millisecond)
	count(h.Guard, srcA, 200)
	h.clock.Advance(10 * time.Second)
	if got := count(h.Guard, srcA, 5); got[Allow] != 5 {
		t.Fatalf("after the burst: %v, want allowed (two strikes are not three)", got)
	}
	if len(h.Bans()) != 0 {
		t.Fatalf("a burst got banned: %v", h.Bans())
	}
}

func TestAuthFailuresFromOneSourceBan(t *testing.T) {
	cfg := testConfig()
	cfg.AuthFailuresUser = 0 // only the per-source rule here
	h := newHarness(t, cfg)
	users := []string{"1001", "1002", "1003", "1004", "1005"}
	for i, u := range users {
		h.clock.Advance(10 * time.Second)
		banned := h.AuthFailed(srcA, u)
		if banned != (i == len(users)-1) {
			t.Fatalf("failure %d: banned = %v", i+1, banned)
		}
	}
	if v := h.Check(srcA, phoneUA); v != Banned {
		t.Fatalf("after 5 failures: %v", v)
	}
	bans := h.onBans()
	if len(bans) != 1 || bans[0].Reason != ReasonAuth || bans[0].User != "1005" {
		t.Fatalf("OnBan: %+v", bans)
	}
	if v := h.metric(t, "gateway_sip_guard_auth_failures_total"); v != 5 {
		t.Errorf("auth_failures_total = %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_bans_total", "reason", "auth"); v != 1 {
		t.Errorf("bans_total{auth} = %v", v)
	}
	// Failures spread wider than the window are forgiven.
	for range 10 {
		h.clock.Advance(3 * time.Minute)
		if h.AuthFailed(srcB, "1001") {
			t.Fatal("one failure every 3 minutes must not reach 5 in 5 minutes")
		}
	}
}

func TestAuthSucceededClearsOnlyAOneUserRecord(t *testing.T) {
	cfg := testConfig()
	cfg.AuthFailuresUser = 0
	h := newHarness(t, cfg)
	// A phone with a stale password that then gets the right one: forgiven.
	for range 4 {
		h.AuthFailed(srcA, "1001")
	}
	h.AuthSucceeded(srcA, "1001")
	for range 4 {
		if h.AuthFailed(srcA, "1001") {
			t.Fatal("the count was not cleared by the user's own success")
		}
	}
	// Someone guessing other accounts while logging in to its own: not forgiven.
	for range 3 {
		h.AuthFailed(srcB, "1002")
	}
	h.AuthFailed(srcB, "1003")
	h.AuthSucceeded(srcB, "1002")
	if !h.AuthFailed(srcB, "1004") {
		t.Fatal("a success for one user wiped failures for others")
	}
}

func TestAuthFailuresForOneUserFromManySources(t *testing.T) {
	h := newHarness(t, testConfig()) // 5 per source, 5 per user, window 5m
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }
	// A botnet guessing 1001's password, one attempt per address: the first four are only
	// counted, the fifth reaches the user limit, and every further one is banned at once.
	for i := 1; i <= 8; i++ {
		h.clock.Advance(time.Second)
		banned := h.AuthFailed(src(i), "1001")
		if banned != (i >= 5) {
			t.Fatalf("source %d: banned = %v", i, banned)
		}
	}
	for _, b := range h.onBans() {
		if b.Reason != ReasonAuthUser || b.User != "1001" {
			t.Fatalf("ban %+v, want auth_user for 1001", b)
		}
	}
	if v := h.metric(t, "gateway_sip_guard_bans_total", "reason", "auth_user"); v != 4 {
		t.Errorf("bans_total{auth_user} = %v", v)
	}
	// The user is not locked out: their phone, which does not fail, works, and a success does
	// not reset the count for the guessers.
	phone := netip.MustParseAddr("192.0.2.50")
	if v := h.Check(phone, phoneUA); v != Allow {
		t.Fatalf("the user's own phone: %v", v)
	}
	h.AuthSucceeded(phone, "1001")
	if !h.AuthFailed(src(9), "1001") {
		t.Fatal("a success of the real user reset the per-user count")
	}
	// Other users are not affected.
	if h.AuthFailed(src(10), "1002") {
		t.Fatal("a failure for another user was banned")
	}
	// Once the attack is over for the whole window (and its tail), the user is cold again.
	h.clock.Advance(10 * time.Minute)
	if h.AuthFailed(src(11), "1001") {
		t.Fatal("per-user count did not decay")
	}
}

func TestScannerUserAgents(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	tests := []struct {
		ua   string
		want Verdict
	}{
		{"friendly-scanner", Scanner},
		{"FRIENDLY-SCANNER", Scanner},
		{"sipvicious 0.3.4", Scanner},
		{"SIPVicious/0.3.4", Scanner},
		{"sipcli/v1.8", Scanner},
		{"VaxSIPUserAgent/3.1", Scanner},
		{"pplsip", Scanner},
		{"Something iWar-ish", Scanner},
		{"  sundayddr", Scanner},
		{"", Allow},
		{phoneUA, Allow},
		{"Linphone/5.2.0 (belle-sip/5.2.0)", Allow},
		{"Zoiper rv2.10.20.2", Allow},
		{"FreeSWITCH-mod_sofia/1.10.12", Allow},
		{"sipsak 0.9.8", Allow},
		{"friendly", Allow},
		{"scanner", Allow},
		{strings.Repeat("x", maxUALen-len("sipcli")) + "sipcli", Scanner},
		{strings.Repeat("x", maxUALen) + "sipcli", Allow}, // past what is looked at
	}
	for i, tt := range tests {
		// A fresh source each time, so that only the User-Agent decides; twice, to go through
		// the cache.
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		for range 2 {
			if got := h.Check(src, tt.ua); got != tt.want {
				t.Errorf("Check(%q) = %v, want %v", tt.ua, got, tt.want)
			}
		}
	}
	// A scanner UA is dropped but does not ban: it costs nothing to forge.
	if v := h.Check(srcA, "friendly-scanner"); v != Scanner {
		t.Fatal(v)
	}
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatalf("after a scanner request, the source: %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_dropped_total", "reason", "scanner"); v != 21 {
		t.Errorf("dropped{scanner} = %v", v)
	}

	none := DefaultConfig()
	none.ScannerUserAgents = nil
	if g := newHarness(t, none); g.Check(srcA, "friendly-scanner") != Allow {
		t.Error("an empty scanner list still filtered")
	}
}

func TestExemptAndClasses(t *testing.T) {
	cfg := testConfig()
	cfg.Exempt = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::7/128")}
	cfg.Classes = []Class{
		{Name: "trunk-acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Rate: 100, Burst: 50},
		{Name: "trunk-nob", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, Rate: 10, Burst: 5, NoBan: true},
		{Name: "v6-host", Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:1:2::5/128")}, Rate: 100, Burst: 20},
	}
	h := newHarness(t, cfg)

	backend := netip.MustParseAddr("10.1.2.3")
	for range 1000 {
		if v := h.Check(backend, "friendly-scanner"); v != Allow {
			t.Fatalf("exempt source: %v", v)
		}
	}
	for range 20 {
		if h.AuthFailed(backend, "1001") {
			t.Fatal("exempt source banned for auth")
		}
	}
	if _, err := h.Ban(backend, time.Minute, ""); err == nil {
		t.Error("admin ban of an exempt source accepted")
	}
	if got := count(h.Guard, netip.MustParseAddr("2001:db8:ffff::7"), 100); got[Allow] != 100 {
		t.Errorf("exempt /128: %v", got)
	}

	trunk := netip.MustParseAddr("203.0.113.9")
	if got := count(h.Guard, trunk, 60); got[Allow] != 50 || got[Limited] != 10 {
		t.Errorf("trunk: %v, want its own burst of 50", got)
	}
	if got := count(h.Guard, srcA, 60); got[Allow] != 5 {
		t.Errorf("default source: %v, want the default burst of 5", got)
	}
	// Each trunk address still has its own bucket.
	if got := count(h.Guard, netip.MustParseAddr("203.0.113.10"), 50); got[Allow] != 50 {
		t.Errorf("second trunk address: %v", got)
	}

	// A NoBan class floods for a minute: limited, never banned.
	nob := netip.MustParseAddr("192.0.2.1")
	for range 600 {
		h.clock.Advance(100 * time.Millisecond)
		for range 5 {
			if v := h.Check(nob, phoneUA); v == Banned {
				t.Fatal("NoBan class banned for flooding")
			}
		}
	}
	for range 20 {
		if h.AuthFailed(nob, "x") {
			t.Fatal("NoBan class banned for auth")
		}
	}
	// A class prefix longer than /64 covers its /64.
	if got := count(h.Guard, netip.MustParseAddr("2001:db8:1:2::77"), 25); got[Allow] != 20 {
		t.Errorf("v6 class widened to /64: %v, want the class burst of 20", got)
	}
}

func TestIPv6PerSlash64AndMappedIPv4(t *testing.T) {
	cfg := testConfig()
	cfg.Strikes = 1 // ban at the first over-limit request
	h := newHarness(t, cfg)
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
	other := netip.MustParseAddr("2001:db8:1:3::1")
	count(h.Guard, a, 3)
	if got := count(h.Guard, b, 2); got[Allow] != 2 {
		t.Fatalf("b: %v", got)
	}
	if v := h.Check(b, phoneUA); v != Limited {
		t.Fatalf("a and b share the /64's bucket of 5, 6th: %v", v)
	}
	if v := h.Check(a, phoneUA); v != Banned {
		t.Fatalf("the /64 is banned, a: %v", v)
	}
	if v := h.Check(other, phoneUA); v != Allow {
		t.Fatalf("the next /64: %v", v)
	}
	bans := h.Bans()
	if len(bans) != 1 || bans[0].Addr != netip.MustParseAddr("2001:db8:1:2::") ||
		bans[0].Prefix() != netip.MustParsePrefix("2001:db8:1:2::/64") {
		t.Fatalf("bans %+v, want the /64", bans)
	}
	if !h.Lift(netip.MustParseAddr("2001:db8:1:2::99")) {
		t.Fatal("lift by any address of the /64 failed")
	}

	v4 := netip.MustParseAddr("192.0.2.44")
	mapped := netip.MustParseAddr("::ffff:192.0.2.44")
	count(h.Guard, mapped, 5)
	if v := h.Check(v4, phoneUA); v != Limited {
		t.Fatalf("IPv4 after its mapped form took the burst: %v", v)
	}
	bans = h.Bans()
	if len(bans) != 1 || bans[0].Addr != v4 || bans[0].Prefix().Bits() != 32 {
		t.Fatalf("bans %+v, want %v/32", bans, v4)
	}
	if v := h.Check(mapped, phoneUA); v != Banned {
		t.Fatalf("mapped form of a banned IPv4: %v", v)
	}
	// Mapped prefixes in the config mean their IPv4 prefix.
	cfg.Exempt = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}
	h2 := newHarness(t, cfg)
	if got := count(h2.Guard, netip.MustParseAddr("10.9.9.9"), 50); got[Allow] != 50 {
		t.Fatalf("IPv4 address under a mapped exempt prefix: %v", got)
	}
}

func TestMaxSourcesBound(t *testing.T) {
	cfg := testConfig()
	cfg.Rate, cfg.Burst = 1000, 1000
	cfg.MaxSources = 1000
	h := newHarness(t, cfg)

	// Real phones talk first and keep talking.
	legit := make([]netip.Addr, 20)
	for i := range legit {
		legit[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		h.Check(legit[i], phoneUA)
	}
	// A source banned before the flood.
	bad := netip.MustParseAddr("198.51.100.66")
	if _, err := h.Ban(bad, time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	h.Check(bad, phoneUA)
	// A password guesser one failure short of its ban, hoping the flood makes us forget it.
	guesser := netip.MustParseAddr("198.51.100.77")
	for i := range cfg.AuthFailures - 1 {
		h.AuthFailed(guesser, fmt.Sprint("guess", i)) // a different user each time
	}

	// 200000 spoofed sources, one packet each, half of them IPv6.
	for i := range 200000 {
		var src netip.Addr
		if i%2 == 0 {
			src = netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 16), byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 0, 1})
		}
		if v := h.Check(src, phoneUA); v != Allow {
			t.Fatalf("a spoofed first packet: %v", v)
		}
		if i%1000 == 0 {
			h.clock.Advance(time.Millisecond)
			for _, l := range legit {
				if v := h.Check(l, phoneUA); v != Allow {
					t.Fatalf("legit source %v during the flood: %v", l, v)
				}
			}
			if n := h.stats().sources; n > uint64(cfg.MaxSources) {
				t.Fatalf("%d sources tracked, bound %d", n, cfg.MaxSources)
			}
		}
	}
	if v := h.metric(t, "gateway_sip_guard_evictions_total"); v < 190000 {
		t.Errorf("evictions_total = %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_sources"); v > float64(cfg.MaxSources) {
		t.Errorf("sources gauge = %v", v)
	}
	// Sources that kept talking were kept: their buckets are intact (not reset to full,
	// which would only be lenient, but proves they were never evicted).
	h.mu.Lock()
	kept := 0
	for _, l := range legit {
		sh := h.shardOf(keyOf(l))
		sh.mu.Lock()
		if e := sh.m[keyOf(l)]; e != nil && e.hits > 100 {
			kept++
		}
		sh.mu.Unlock()
	}
	h.mu.Unlock()
	if kept != len(legit) {
		t.Errorf("%d of %d regular sources survived the flood", kept, len(legit))
	}
	// Evicted or not, a banned source stays banned: the store remembers.
	if v := h.Check(bad, phoneUA); v != Banned {
		t.Errorf("banned source after the flood: %v", v)
	}
	if !h.AuthFailed(guesser, "guess-last") {
		t.Error("the flood made the guard forget a source's digest failures")
	}
}

func TestAdminBanLiftList(t *testing.T) {
	h := newHarness(t, testConfig())
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatal(v)
	}
	b, err := h.Ban(srcA, time.Hour, "abuse ticket 42")
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	if _, err := h.Ban(netip.MustParseAddr("2001:db8::1"), time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if v := h.Check(srcA, phoneUA); v != Banned {
		t.Fatalf("tracked source after admin ban: %v", v)
	}
	if v := h.Check(srcB, phoneUA); v != Allow {
		t.Fatalf("other source: %v", v)
	}
	if v := h.Check(netip.MustParseAddr("2001:db8::ffff"), phoneUA); v != Banned {
		t.Fatalf("untracked source in a banned /64: %v", v)
	}
	bans := h.Bans()
	if len(bans) != 2 || bans[0].Reason != ReasonAdmin || bans[0].Addr != netip.MustParseAddr("2001:db8::") ||
		bans[1] != b || b.Reason != "abuse ticket 42" {
		t.Fatalf("Bans() = %+v", bans)
	}
	if len(h.onBans()) != 2 {
		t.Errorf("OnBan not called for admin bans")
	}
	if v := h.metric(t, "gateway_sip_guard_bans_total", "reason", "admin"); v != 2 {
		t.Errorf("bans_total{admin} = %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_banned"); v != 2 {
		t.Errorf("banned = %v", v)
	}
	if !h.Lift(srcA) {
		t.Fatal("Lift reported no ban")
	}
	if h.Lift(srcA) {
		t.Fatal("second Lift reported a ban")
	}
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatalf("after Lift: %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_banned"); v != 1 {
		t.Errorf("banned after lift = %v", v)
	}
	for _, bad := range []struct {
		a netip.Addr
		d time.Duration
	}{{netip.Addr{}, time.Hour}, {srcA, 0}, {srcA, -time.Second}} {
		if _, err := h.Ban(bad.a, bad.d, ""); err == nil {
			t.Errorf("Ban(%v, %v) accepted", bad.a, bad.d)
		}
	}
	h.clock.Advance(2 * time.Hour)
	if n := len(h.Bans()); n != 0 {
		t.Errorf("expired bans listed: %d", n)
	}
}

func TestSweep(t *testing.T) {
	h := newHarness(t, testConfig())
	for i := range 100 {
		h.Check(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), phoneUA)
		h.AuthFailed(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), fmt.Sprint("user", i%3))
	}
	h.clock.Advance(time.Minute)
	h.Check(srcA, phoneUA)
	h.Sweep()
	if n := h.stats().sources; n != 101 {
		t.Fatalf("%d sources after a minute, want all kept (auth counts are still live)", n)
	}
	h.clock.Advance(time.Duration(h.idle))
	h.Check(srcA, phoneUA)
	h.Sweep()
	if n := h.stats().sources; n != 1 {
		t.Fatalf("%d sources after the idle time, want only the active one", n)
	}
	if n := len(h.users.m); n != 0 {
		t.Errorf("%d user counters kept after their window", n)
	}

	// Bans made and lifted elsewhere (another node sharing the store) reach tracked sources.
	h.store.Ban(Ban{Addr: srcA, Since: h.clock.Now(), Until: h.clock.Now().Add(time.Hour), Reason: "elsewhere"})
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatalf("before the sweep the local view is used: %v", v)
	}
	h.Sweep()
	if v := h.Check(srcA, phoneUA); v != Banned {
		t.Fatalf("after the sweep: %v", v)
	}
	if v := h.metric(t, "gateway_sip_guard_banned"); v != 1 {
		t.Errorf("banned gauge = %v", v)
	}
	h.store.Lift(srcA)
	h.clock.Advance(2 * time.Second)
	h.Sweep()
	if v := h.Check(srcA, phoneUA); v != Allow {
		t.Fatalf("after a lift elsewhere and a sweep: %v", v)
	}
	// A local ban made just now is not undone because the store read predates it.
	h.Check(srcB, phoneUA)
	if _, err := h.Ban(srcB, time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	h.store.Lift(srcB) // as if the sweep's read had come before the store write
	h.Sweep()
	if v := h.Check(srcB, phoneUA); v != Banned {
		t.Fatalf("fresh local ban undone by a sweep: %v", v)
	}
}

func TestMemoryStoreBound(t *testing.T) {
	c := newFakeClock()
	s := NewMemoryStore(3, c.Now)
	now := c.Now()
	for i := range 5 {
		s.Ban(Ban{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Until: now.Add(time.Duration(i+1) * time.Minute)})
	}
	if n := len(s.List()); n != 3 {
		t.Fatalf("%d bans, bound 3", n)
	}
	// The ones ending first made room.
	for i := range 5 {
		_, ok := s.Banned(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if ok != (i >= 2) {
			t.Errorf("ban %d present = %v", i, ok)
		}
	}
	c.Advance(3 * time.Minute)
	if _, ok := s.Banned(netip.AddrFrom4([4]byte{10, 0, 0, 2})); ok {
		t.Error("expired ban still answered")
	}
	if n := len(s.List()); n != 2 {
		t.Errorf("List after expiry: %d", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSources = 500
	h := newHarness(t, cfg)
	var workers, admin sync.WaitGroup
	stop := make(chan struct{})
	admin.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.Sweep()
			_, _ = h.Ban(srcA, time.Minute, "")
			h.Lift(srcA)
			h.Bans()
			if _, err := h.reg.Gather(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for w := range 8 {
		workers.Go(func() {
			for i := range 20000 {
				src := netip.AddrFrom4([4]byte{198, 18, byte(w), byte(i % 300)})
				if i%7 == 0 {
					src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(w), byte(i), 15: 1})
				}
				ua := phoneUA
				if i%11 == 0 {
					ua = "friendly-scanner"
				}
				h.Check(src, ua)
				if i%97 == 0 {
					h.AuthFailed(src, fmt.Sprint("u", i%5))
					h.AuthSucceeded(src, "u1")
				}
				if i%1000 == 0 {
					h.clock.Advance(time.Second)
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	admin.Wait()
	if n := h.stats().sources; n > uint64(cfg.MaxSources) {
		t.Errorf("%d sources, bound %d", n, cfg.MaxSources)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rate, cfg.Burst = 1e12, 1<<30
	cfg.Classes = []Class{{Name: "t", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Rate: 1, Burst: 1}}
	h := newHarness(t, cfg)
	h.Check(srcA, phoneUA)
	if n := testing.AllocsPerRun(1000, func() { h.Check(srcA, phoneUA) }); n != 0 {
		t.Errorf("Check of a known source allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { h.Check(srcA, "friendly-scanner") }); n != 0 {
		t.Errorf("Check of a scanner allocates %v times", n)
	}
	trunk := netip.MustParseAddr("203.0.113.1")
	h.Check(trunk, phoneUA)
	if n := testing.AllocsPerRun(1000, func() { h.Check(trunk, phoneUA) }); n != 0 {
		t.Errorf("Check over the limit allocates %v times", n)
	}
	if _, err := h.Ban(srcB, time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	h.Check(srcB, phoneUA)
	if n := testing.AllocsPerRun(1000, func() { h.Check(srcB, phoneUA) }); n != 0 {
		t.Errorf("Check of a banned source allocates %v times", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/24")
	bad := map[string]func(*Config){
		"negative rate":      func(c *Config) { c.Rate = -1 },
		"NaN rate":           func(c *Config) { c.Rate = math.NaN() },
		"no burst":           func(c *Config) { c.Burst = 0 },
		"negative strikes":   func(c *Config) { c.Strikes = -1 },
		"negative ban time":  func(c *Config) { c.BanTime = -time.Second },
		"negative auth":      func(c *Config) { c.AuthFailures = -1 },
		"negative sources":   func(c *Config) { c.MaxSources = -1 },
		"empty scanner":      func(c *Config) { c.ScannerUserAgents = []string{"sipcli", ""} },
		"invalid exempt":     func(c *Config) { c.Exempt = []netip.Prefix{{}} },
		"class without pfx":  func(c *Config) { c.Classes = []Class{{Name: "x", Rate: 1, Burst: 1}} },
		"class no burst":     func(c *Config) { c.Classes = []Class{{Name: "x", Prefixes: []netip.Prefix{p}, Rate: 1}} },
		"class invalid pfx":  func(c *Config) { c.Classes = []Class{{Name: "x", Prefixes: []netip.Prefix{{}}}} },
		"too many scanners":  func(c *Config) { c.ScannerUserAgents = make([]string, 65) },
		"huge scanner entry": func(c *Config) { c.ScannerUserAgents = []string{strings.Repeat("a", maxUALen+1)} },
	}
	for name, mod := range bad {
		cfg := DefaultConfig()
		mod(&cfg)
		if _, err := New(cfg, nil, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The zero Config is valid: everything off but the memory bound.
	g, err := New(Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(g, srcA, 10000); got[Allow] != 10000 {
		t.Errorf("zero config limited: %v", got)
	}
}

func TestMetricsLintAndRegistration(t *testing.T) {
	h := newHarness(t, testConfig())
	count(h.Guard, srcA, 10)
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"gateway_sip_guard_dropped_total", "gateway_sip_guard_bans_total",
		"gateway_sip_guard_banned", "gateway_sip_guard_auth_failures_total",
		"gateway_sip_guard_evictions_total", "gateway_sip_guard_sources"} {
		if n, _ := testutil.GatherAndCount(h.reg, name); n == 0 {
			t.Errorf("%s not exported", name)
		}
	}
	// A second guard on the same registry is refused rather than silently sharing series.
	if _, err := New(testConfig(), nil, h.reg); err == nil {
		t.Error("double registration accepted")
	}
}

func TestRunSweepsUntilCancelled(t *testing.T) {
	g, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		g.Run(ctx)
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
