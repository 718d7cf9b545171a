package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type readiness struct{ err error }

func (r readiness) Ready() error { return r.err }

// startServer runs the HTTP plane on a loopback port with cfg adjusted by edit.
func startServer(t *testing.T, edit func(*Config), deps Deps) *Server {
	t.Helper()
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.JWT = testJWTConfig(t)
	if edit != nil {
		edit(&cfg)
	}
	reg := prometheus.NewRegistry()
	if deps.Metrics == nil {
		deps.Metrics = reg
	}
	s, err := New(context.Background(), cfg, deps, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// clientFrom is an HTTP client whose connections come from a given loopback address, so
// tests have several real client IPs.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

func TestHealthAndReadiness(t *testing.T) {
	notReady := startServer(t, nil, Deps{Ready: readiness{errors.New("starting")}})
	c := clientFrom("127.0.0.1")
	base := "http://" + notReady.Addr().String()
	if res := get(t, c, base+"/healthz", nil); res.StatusCode != 200 {
		t.Errorf("/healthz = %d", res.StatusCode)
	}
	if res := get(t, c, base+"/readyz", nil); res.StatusCode != 503 {
		t.Errorf("/readyz while not ready = %d, want 503", res.StatusCode)
	}
	ready := startServer(t, nil, Deps{Ready: readiness{}})
	if res := get(t, c, "http://"+ready.Addr().String()+"/readyz", nil); res.StatusCode != 200 {
		t.Errorf("/readyz when ready = %d", res.StatusCode)
	}
}

func TestSecurityHeadersAndLimits(t *testing.T) {
	s := startServer(t, nil, Deps{})
	base := "http://" + s.Addr().String()
	res := get(t, clientFrom("127.0.0.1"), base+"/healthz", nil)
	for h, want := range map[string]string{
		"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
	} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	if res.Header.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent over plain HTTP")
	}
	// A header section over max_header_bytes is refused before any handler runs.
	big := get(t, clientFrom("127.0.0.1"), base+"/healthz", map[string]string{"X-Big": strings.Repeat("a", 40<<10)})
	if big.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("40 KiB header: %d, want 431", big.StatusCode)
	}
	if res := get(t, clientFrom("127.0.0.1"), base+"/nope", nil); res.StatusCode != 404 {
		t.Errorf("unknown path: %d", res.StatusCode)
	}
}

func TestRateLimitPerClientIP(t *testing.T) {
	s := startServer(t, func(c *Config) { c.RateLimit.PerIP = 5; c.RateLimit.Burst = 5 }, Deps{})
	base := "http://" + s.Addr().String() + "/healthz"
	flood, other := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")
	var limited *http.Response
	for range 30 {
		if res := get(t, flood, base, nil); res.StatusCode == http.StatusTooManyRequests {
			limited = res
			break
		}
	}
	if limited == nil {
		t.Fatal("30 requests at once from one IP were never limited (limit 5/s, burst 5)")
	}
	if ra := limited.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("429 without a useful Retry-After: %q", ra)
	}
	if res := get(t, other, base, nil); res.StatusCode != 200 {
		t.Errorf("another client IP was limited too: %d", res.StatusCode)
	}
}

func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	trusted := startServer(t, func(c *Config) {
		c.RateLimit.PerIP, c.RateLimit.Burst = 1, 1
		c.TrustedProxies = []string{"127.0.0.4/32"}
	}, Deps{})
	base := "http://" + trusted.Addr().String() + "/healthz"
	proxy := clientFrom("127.0.0.4")
	// Behind the trusted proxy, two different clients each get their own bucket.
	for _, client := range []string{"198.51.100.1", "198.51.100.2"} {
		if res := get(t, proxy, base, map[string]string{"X-Forwarded-For": "203.0.113.9, " + client}); res.StatusCode != 200 {
			t.Errorf("client %s behind the proxy: %d", client, res.StatusCode)
		}
	}
	if res := get(t, proxy, base, map[string]string{"X-Forwarded-For": "198.51.100.1"}); res.StatusCode != 429 {
		t.Errorf("second request of client 198.51.100.1: %d, want 429", res.StatusCode)
	}
	// From an untrusted peer the header is ignored: rotating it does not escape the limit.
	direct := clientFrom("127.0.0.5")
	get(t, direct, base, map[string]string{"X-Forwarded-For": "192.0.2.1"})
	if res := get(t, direct, base, map[string]string{"X-Forwarded-For": "192.0.2.2"}); res.StatusCode != 429 {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer escaped the limit: %d", res.StatusCode)
	}
}

func TestConnectionCapPerIP(t *testing.T) {
	s := startServer(t, func(c *Config) { c.RateLimit.MaxConnsPerIP = 2 }, Deps{})
	addr := s.Addr().String()
	var held []net.Conn
	for range 2 {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	if res := get(t, clientFrom("127.0.0.6"), "http://"+addr+"/healthz", nil); res.StatusCode != 429 {
		t.Errorf("third connection from one IP: %d, want 429", res.StatusCode)
	}
	if res := get(t, clientFrom("127.0.0.7"), "http://"+addr+"/healthz", nil); res.StatusCode != 200 {
		t.Errorf("another IP was refused: %d", res.StatusCode)
	}
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(2 * time.Second)
	for {
		res := get(t, clientFrom("127.0.0.6"), "http://"+addr+"/healthz", nil)
		if res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a freed connection slot was never given back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := Defaults()
	bad.Listen = "nope"
	bad.MaxHeaderBytes = 10
	bad.RateLimit.PerIP = -1
	bad.TrustedProxies = []string{"not-an-ip"}
	bad.Timeouts.Read = 0
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"http.listen", "max_header_bytes", "rate_limit", "trusted_proxies", "timeouts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}
