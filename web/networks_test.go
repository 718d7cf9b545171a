package web

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"gopkg.in/yaml.v3"

	"github.com/dualgate/dualgate/internal/tlsadmit/tlsadmittest"
)

func ptr[T any](v T) *T { return &v }

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// office is a network holding the loopback address 127.0.0.2 (and a documentation range), its
// limits set by edit.
func office(edit func(*NetworkLimits)) NetworkLimits {
	n := NetworkLimits{Name: "hq-office", CIDRs: []string{"127.0.0.2/32", "198.51.100.0/24"}}
	if edit != nil {
		edit(&n)
	}
	return n
}

func (s *Server) limitedCount(limit, class string) float64 {
	return testutil.ToFloat64(s.m.limited.WithLabelValues(limit, class))
}

// TestNetworksDecodeAndInherit: the README's example decodes strictly; the fields a network
// leaves out take http.rate_limit's values, and 0 is kept as "no limit".
func TestNetworksDecodeAndInherit(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	doc := `
rate_limit:
  per_ip: 20
  networks:
    - name: hq-office
      cidrs: ["203.0.113.7/32", "198.51.100.0/24"]
      per_ip: 500
      max_conns_per_ip: 2000
      ws_per_minute: 3000
      refresh_per_minute: 0
`
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got := cfg.RateLimit.Networks[0].resolve(cfg.RateLimit)
	want := RateLimitConfig{PerIP: 500, Burst: 100, LoginPerMinute: 10, MaxConnsPerIP: 2000, WSPerMinute: 3000,
		WSPerUser: 4, RefreshPerMinute: 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("resolved\n%+v\nwant\n%+v", got, want)
	}
	ips := newClientIPs(nil, cfg.RateLimit)
	for addr, class := range map[string]string{"203.0.113.7": "hq-office", "198.51.100.200": "hq-office",
		"203.0.113.8": defaultClass, "127.0.0.1": defaultClass, "2001:db8::1": defaultClass} {
		if got := ips.className(ips.class(mustAddr(t, addr))); got != class {
			t.Errorf("%s is in %q, want %q", addr, got, class)
		}
	}

	// ws_per_user is per user, not per address: a network cannot set it.
	dec = yaml.NewDecoder(strings.NewReader("rate_limit: {networks: [{name: x, cidrs: [10.0.0.0/8], ws_per_user: 9}]}"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "ws_per_user") {
		t.Errorf("ws_per_user in a network: %v, want an unknown-field error", err)
	}
}

func TestNetworksValidate(t *testing.T) {
	cases := []struct {
		name     string
		networks []NetworkLimits
		want     []string // every one must be in the error; none: valid
	}{
		{"one network", []NetworkLimits{office(nil)}, nil},
		{"disjoint networks", []NetworkLimits{office(nil), {Name: "branch", CIDRs: []string{"10.1.0.0/16", "2001:db8::/48"}}}, nil},
		{"bare address", []NetworkLimits{{Name: "nat", CIDRs: []string{"192.0.2.1"}}}, nil},
		{"zero disables", []NetworkLimits{office(func(n *NetworkLimits) { n.PerIP, n.MaxConnsPerIP = ptr(0.0), ptr(0) })}, nil},
		{"no name", []NetworkLimits{{CIDRs: []string{"10.0.0.0/8"}}}, []string{"networks[0]: a name is required"}},
		{"reserved name", []NetworkLimits{{Name: "default", CIDRs: []string{"10.0.0.0/8"}}}, []string{`networks[0] (default): the name "default" is taken`}},
		{"duplicate name", []NetworkLimits{{Name: "a", CIDRs: []string{"10.0.0.0/8"}}, {Name: "a", CIDRs: []string{"11.0.0.0/8"}}},
			[]string{"networks[1] (a): the name is already used"}},
		{"no cidrs", []NetworkLimits{{Name: "a"}}, []string{"networks[0] (a): cidrs are required"}},
		{"bad cidr", []NetworkLimits{{Name: "a", CIDRs: []string{"10.0.0.0/33", "office"}}},
			[]string{`"10.0.0.0/33" is neither`, `"office" is neither`}},
		{"overlap", []NetworkLimits{{Name: "a", CIDRs: []string{"10.0.0.0/8"}}, {Name: "b", CIDRs: []string{"192.0.2.0/24", "10.9.0.1"}}},
			[]string{`networks[1] (b): 10.9.0.1/32 overlaps 10.0.0.0/8 of network "a"`}},
		{"overlap within one network is fine", []NetworkLimits{{Name: "a", CIDRs: []string{"10.0.0.0/8", "10.1.0.0/16"}}}, nil},
		{"negative", []NetworkLimits{office(func(n *NetworkLimits) { n.WSPerMinute = ptr(-1.0) })},
			[]string{"networks[0] (hq-office): values must not be negative"}},
		{"burst 0 with a rate", []NetworkLimits{office(func(n *NetworkLimits) { n.Burst = ptr(0) })},
			[]string{"networks[0] (hq-office): burst must be at least 1"}},
		{"every problem at once", []NetworkLimits{
			{CIDRs: []string{"10.0.0.0/8"}},
			{Name: "b", CIDRs: []string{"10.0.0.1", "x"}, LoginPerMinute: ptr(-5.0)},
			{Name: "b"},
		}, []string{"networks[0]: a name is required", `networks[1] (b): cidrs: "x" is neither`,
			"networks[1] (b): 10.0.0.1/32 overlaps 10.0.0.0/8", "networks[1] (b): values must not be negative",
			"networks[2] (b): the name is already used", "networks[2] (b): cidrs are required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.JWT = testJWTConfig(t)
			cfg.RateLimit.Networks = tc.networks
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), "http.rate_limit."+w) && !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
	// Next to the other problems of the section, in the one error.
	cfg := Defaults()
	cfg.Listen = "nope"
	cfg.RateLimit.Networks = []NetworkLimits{{Name: "a"}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http.listen") || !strings.Contains(err.Error(), "networks[0] (a)") {
		t.Errorf("both problems not reported: %v", err)
	}
}

// TestNetworkConnectionCap: an office address holds more connections than the default cap
// allows, while another address is refused at the default; each refusal names its class.
func TestNetworkConnectionCap(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.RateLimit.MaxConnsPerIP = 2
		c.RateLimit.Networks = []NetworkLimits{office(func(n *NetworkLimits) { n.MaxConnsPerIP = ptr(6) })}
	}, Deps{})
	addr := s.Addr().String()
	hold := func(ip string, n int) {
		for range n {
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	hold("127.0.0.2", 5)
	if res := get(t, clientFrom("127.0.0.2"), "http://"+addr+"/healthz", nil); res.StatusCode != 200 {
		t.Errorf("6th connection from the office: %d, want 200 (its cap is 6)", res.StatusCode)
	}
	hold("127.0.0.3", 2)
	if res := get(t, clientFrom("127.0.0.3"), "http://"+addr+"/healthz", nil); res.StatusCode != 429 {
		t.Errorf("3rd connection from an address in no network: %d, want 429", res.StatusCode)
	}
	if n := s.limitedCount("connections", defaultClass); n != 1 {
		t.Errorf(`rate_limited_total{limit="connections",class="default"} = %v, want 1`, n)
	}
	if n := s.limitedCount("connections", "hq-office"); n != 0 {
		t.Errorf(`rate_limited_total{limit="connections",class="hq-office"} = %v, want 0`, n)
	}
	// The office's own cap still holds.
	hold("127.0.0.2", 1)
	tlsadmittest.Poll(t, "the office's 7th connection refused", func() bool {
		res := get(t, clientFrom("127.0.0.2"), "http://"+addr+"/healthz", nil)
		return res.StatusCode == 429
	})
	if n := s.limitedCount("connections", "hq-office"); n < 1 {
		t.Errorf(`rate_limited_total{limit="connections",class="hq-office"} = %v, want at least 1`, n)
	}
}

// burst counts the requests send makes before the first 429 (at most max), failing on any
// other status than ok.
func burst(t *testing.T, max, ok int, send func() int) int {
	t.Helper()
	for i := range max {
		switch code := send(); code {
		case http.StatusTooManyRequests:
			return i
		case ok:
		default:
			t.Fatalf("request %d: %d, want %d or 429", i+1, code, ok)
		}
	}
	return max
}

// TestNetworkRequestLimits: every per-IP request limit (all routes, login, refresh, the
// WebSocket upgrade) gives an office address its network's budget and everyone else the
// default, in the same server; a client behind a trusted proxy is classed by the address
// X-Forwarded-For gives.
func TestNetworkRequestLimits(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.RateLimit = RateLimitConfig{PerIP: 0.01, Burst: 3, LoginPerMinute: 2, RefreshPerMinute: 2, WSPerMinute: 2,
			WSPerUser: 4, MaxConnsPerIP: 64}
		c.RateLimit.Networks = []NetworkLimits{office(func(n *NetworkLimits) {
			n.Burst, n.LoginPerMinute, n.RefreshPerMinute, n.WSPerMinute = ptr(40), ptr(0.6), ptr(24.0), ptr(16.0)
		})}
		c.TrustedProxies = []string{"127.0.0.9"}
	}, Deps{Agents: &fakeSockets{}})
	base := "http://" + s.Addr().String()
	code := func(ip, method, path string, hdr map[string]string) func() int {
		return func() int {
			req, _ := http.NewRequest(method, base+path, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			res, err := clientFrom(ip).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res.StatusCode
		}
	}

	// login: the route is limited before it looks at anything (404 here: no accounts).
	// Burst: half a minute's worth, at least 1. The office's 0.6/min is below the default: a
	// network may also be stricter.
	if n := burst(t, 10, 404, code("127.0.0.3", "POST", "/api/login", nil)); n != 1 {
		t.Errorf("login from the default class: %d before 429, want 1", n)
	}
	if n := burst(t, 10, 404, code("127.0.0.2", "POST", "/api/login", nil)); n != 1 {
		t.Errorf("login from the office: %d before 429, want 1", n)
	}
	// refresh: 401 without a token until limited; default burst 1, office 12.
	if n := burst(t, 30, 401, code("127.0.0.4", "POST", "/api/refresh", nil)); n != 1 {
		t.Errorf("refresh from the default class: %d before 429, want 1", n)
	}
	if n := burst(t, 30, 401, code("127.0.0.2", "POST", "/api/refresh", nil)); n != 12 {
		t.Errorf("refresh from the office: %d before 429, want 12", n)
	}
	// Through the trusted proxy, the client named by X-Forwarded-For is in the office.
	viaProxy := map[string]string{"X-Forwarded-For": "198.51.100.20"}
	if n := burst(t, 30, 401, code("127.0.0.9", "POST", "/api/refresh", viaProxy)); n != 12 {
		t.Errorf("refresh from an office address behind the trusted proxy: %d before 429, want 12", n)
	}
	// All routes: default burst 3, office 40. Every route goes through this limit, so fresh
	// addresses (an office one behind the proxy) that the requests above did not use.
	if n := burst(t, 60, 200, code("127.0.0.5", "GET", "/healthz", nil)); n != 3 {
		t.Errorf("requests from the default class: %d before 429, want 3", n)
	}
	if n := burst(t, 60, 200, code("127.0.0.9", "GET", "/healthz", map[string]string{"X-Forwarded-For": "198.51.100.21"})); n != 40 {
		t.Errorf("requests from the office: %d before 429, want 40", n)
	}

	// WebSocket upgrades, real ones: default burst 1, office 8.
	upgrade := func(ip string, i int) func() int {
		return func() int {
			d := websocket.Dialer{Subprotocols: []string{"sip"}, HandshakeTimeout: 2 * time.Second,
				NetDial: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial}
			h := http.Header{"Authorization": {"Bearer " + token(t, s, fmt.Sprintf("agent-%s-%d", ip, i), "agent")},
				"Origin": {base}}
			ws, res, err := d.Dial("ws://"+s.Addr().String()+"/ws", h)
			if err == nil {
				ws.Close()
				return http.StatusSwitchingProtocols
			}
			if res == nil {
				t.Fatalf("upgrade from %s: %v", ip, err)
			}
			return res.StatusCode
		}
	}
	i := 0
	next := func(ip string) func() int { i++; return upgrade(ip, i) }
	if n := burst(t, 20, 101, func() int { return next("127.0.0.6")() }); n != 1 {
		t.Errorf("upgrades from the default class: %d before 429, want 1", n)
	}
	if n := burst(t, 20, 101, func() int { return next("127.0.0.2")() }); n != 8 {
		t.Errorf("upgrades from the office: %d before 429, want 8", n)
	}

	// One refusal per limit and class above, each with its label.
	for _, c := range []struct {
		limit, class string
		want         float64
	}{
		{"login", defaultClass, 1}, {"login", "hq-office", 1},
		{"refresh", defaultClass, 1}, {"refresh", "hq-office", 2},
		{"ws", defaultClass, 1}, {"ws", "hq-office", 1},
	} {
		if n := s.limitedCount(c.limit, c.class); n != c.want {
			t.Errorf(`rate_limited_total{limit=%q,class=%q} = %v, want %v`, c.limit, c.class, n, c.want)
		}
	}
	if s.limitedCount("all", defaultClass) < 1 || s.limitedCount("all", "hq-office") != 1 {
		t.Errorf(`rate_limited_total{limit="all"}: default %v (want ≥1), hq-office %v (want 1)`,
			s.limitedCount("all", defaultClass), s.limitedCount("all", "hq-office"))
	}
	mfs, err := s.deps.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// exchangeFrom is exchange from a chosen local address.
func exchangeFrom(t *testing.T, ip, addr, input string) string {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, input)
	_ = c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestFastLaneNetworks: the fast lane answers an office address's requests itself up to the
// network's budget, and hands a default-class address to net/http (which answers 429) at the
// default one.
func TestFastLaneNetworks(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.RateLimit.PerIP, cfg.RateLimit.Burst, cfg.RateLimit.MaxConnsPerIP = 0.01, 3, 1
	cfg.RateLimit.Networks = []NetworkLimits{office(func(n *NetworkLimits) { n.Burst, n.MaxConnsPerIP = ptr(12), ptr(4) })}
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	addr := s.Addr().String()
	req := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"

	got := exchangeFrom(t, "127.0.0.2", addr, strings.Repeat(req, 12))
	if n := strings.Count(got, "HTTP/1.1 200 OK"); n != 12 {
		t.Errorf("office: %d answers 200, want 12", n)
	}
	if n := s.fast.handovers.Load(); n != 0 {
		t.Errorf("office within its budget: %d handovers to net/http, want 0 (the lane answers)", n)
	}
	got = exchangeFrom(t, "127.0.0.2", addr, req)
	if !strings.HasPrefix(got, "HTTP/1.1 429 ") {
		t.Errorf("office past its burst: %.80q, want 429", got)
	}

	got = exchangeFrom(t, "127.0.0.3", addr, strings.Repeat(req, 5))
	if n := strings.Count(got, "HTTP/1.1 200 OK"); n != 3 || strings.Count(got, "HTTP/1.1 429 ") != 2 {
		t.Errorf("default class: %d answers 200, want 3 then 429s: %.300q", n, got)
	}
	if a, o := s.limitedCount("all", defaultClass), s.limitedCount("all", "hq-office"); a != 2 || o != 1 {
		t.Errorf(`rate_limited_total{limit="all"}: default %v, hq-office %v; want 2 and 1`, a, o)
	}

}

// TestFastLaneNetworkConnections: the connection cap in front of the lane counts an office
// address against its network's cap and another against the default.
func TestFastLaneNetworkConnections(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.RateLimit.MaxConnsPerIP = 1
	cfg.RateLimit.Networks = []NetworkLimits{office(func(n *NetworkLimits) { n.MaxConnsPerIP = ptr(4) })}
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	addr := s.Addr().String()
	req := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"
	// idle opens a keep-alive connection and has the lane answer one request on it, so the
	// connection is surely accepted and counted (it stays idle in the lane).
	idle := func(ip string) {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("keep-alive connection from %s: %v %v", ip, res, err)
		}
		res.Body.Close()
	}
	for range 3 {
		idle("127.0.0.2")
	}
	if got := exchangeFrom(t, "127.0.0.2", addr, req); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("the office's 4th connection: %.80q, want 200", got)
	}
	idle("127.0.0.2")
	if got := exchangeFrom(t, "127.0.0.2", addr, req); !strings.HasPrefix(got, "HTTP/1.1 429 ") {
		t.Errorf("the office's 5th connection: %.80q, want 429", got)
	}
	idle("127.0.0.4")
	if got := exchangeFrom(t, "127.0.0.4", addr, req); !strings.HasPrefix(got, "HTTP/1.1 429 ") {
		t.Errorf("second connection from the default class: %.80q, want 429", got)
	}
	if n := s.limitedCount("connections", defaultClass); n != 1 {
		t.Errorf(`rate_limited_total{limit="connections",class="default"} = %v, want 1`, n)
	}
	if n := s.limitedCount("connections", "hq-office"); n != 1 {
		t.Errorf(`rate_limited_total{limit="connections",class="hq-office"} = %v, want 1`, n)
	}
}

// TestHandshakeAdmissionNetworks: under TLS the per-IP cap in front of the handshake queue
// uses the same classes: an office address queues more connections than a default one.
func TestHandshakeAdmissionNetworks(t *testing.T) {
	gate := tlsadmittest.NewGate()
	s := startTLSServer(t, func(c *Config) {
		c.TLSHandshakes = HandshakeConfig{Concurrency: 1, Queue: 100, QueueWait: time.Minute}
		c.RateLimit.MaxConnsPerIP = 1
		c.RateLimit.Networks = []NetworkLimits{office(func(n *NetworkLimits) { n.MaxConnsPerIP = ptr(5) })}
	}, handshakeHooks{start: func(net.Conn) { gate.Wait() }}, true)
	t.Cleanup(gate.Release)

	s.rawConn(t, "127.0.0.2") // the worker holds it
	tlsadmittest.Poll(t, "the worker busy", func() bool { return s.adm.InProgress() == 1 })
	for i := range 4 {
		s.rawConn(t, "127.0.0.2")
		tlsadmittest.Poll(t, fmt.Sprintf("%d office connections queued", i+1), func() bool { return s.adm.Queued() == float64(i+1) })
	}
	if over := s.rawConn(t, "127.0.0.2"); !tlsadmittest.ClosedByServer(over) {
		t.Error("the office's 6th connection was not closed (its cap is 5)")
	}
	s.rawConn(t, "127.0.0.3")
	tlsadmittest.Poll(t, "the default-class connection queued", func() bool { return s.adm.Queued() == 5 })
	if over := s.rawConn(t, "127.0.0.3"); !tlsadmittest.ClosedByServer(over) {
		t.Error("a default-class address's 2nd connection was not closed (the default cap is 1)")
	}
	if o, d := s.limitedCount("connections", "hq-office"), s.limitedCount("connections", defaultClass); o != 1 || d != 1 {
		t.Errorf(`rate_limited_total{limit="connections"}: hq-office %v, default %v; want 1 and 1`, o, d)
	}
}

// TestClassifyOnce: the request chain, the connection cap and the fast lane all class an
// address through clientIPs.class; here its answers for the edges of a network.
func TestClassifyOnce(t *testing.T) {
	ips := newClientIPs(nil, RateLimitConfig{Networks: []NetworkLimits{
		{Name: "a", CIDRs: []string{"10.0.0.0/24"}}, {Name: "b", CIDRs: []string{"2001:db8::/64", "10.0.1.0"}},
	}})
	for addr, want := range map[string]string{
		"10.0.0.0": "a", "10.0.0.255": "a", "10.0.1.0": "b", "10.0.1.1": defaultClass,
		"2001:db8::ffff": "b", "2001:db8:0:1::": defaultClass, "9.255.255.255": defaultClass,
	} {
		if got := ips.className(ips.class(mustAddr(t, addr))); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
	r := httpRequestWithInfo(&reqInfo{ip: mustAddr(t, "10.0.0.7"), class: 1})
	if ip, class := clientOf(r); ip.String() != "10.0.0.7" || class != 1 {
		t.Errorf("clientOf: %v %d", ip, class)
	}
}
