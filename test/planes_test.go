package test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func httpClientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// TestPlanesHaveSeparateLimits: an HTTP flood is limited by the HTTP plane without costing the
// SIP plane a call, and SIP load does not cost the HTTP plane an answer.
func TestPlanesHaveSeparateLimits(t *testing.T) {
	requireSipp(t)
	gwPort, p := freePort(t), freePort(t)
	u := startUAS(t, "uas-rr.xml", p)
	cfg := strings.Replace(gwConfig(4, dest(p, ""), ""), `http: {listen: "127.0.0.1:0", jwt: {ephemeral_secret: true}}`,
		`http: {listen: "127.0.0.1:0", jwt: {ephemeral_secret: true}, rate_limit: {per_ip: 20, burst: 20}}`, 1)
	gw := startGateway(t, gwPort, cfg)
	base := "http://" + gw.HTTPAddr()

	// HTTP flood from one address while SIP calls run.
	var limited, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	flood := httpClientFrom("127.0.0.2")
	wg.Go(func() {
		for i := 0; i < 5000; i++ { // bounded
			select {
			case <-stop:
				return
			default:
			}
			res, err := flood.Get(base + "/healthz")
			if err != nil {
				continue
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests {
				limited.Add(1)
			} else {
				served.Add(1)
			}
		}
	})
	res := runUAC(t, scenario("uac-invite.xml"), gwPort, 40, 40)
	close(stop)
	wg.Wait()
	if res.ok != 40 {
		t.Fatalf("during the HTTP flood %d of 40 SIP calls succeeded\n%s", res.ok, tail(res.out, 2000))
	}
	if limited.Load() == 0 {
		t.Fatalf("the HTTP flood was never limited (%d served)", served.Load())
	}
	t.Logf("HTTP flood: %d served, %d limited; SIP: 40/40 calls", served.Load(), limited.Load())

	// SIP load while another HTTP client polls: the SIP plane's traffic costs it nothing.
	poll := httpClientFrom("127.0.0.3")
	done := make(chan uacResult)
	go func() { done <- runUAC(t, scenario("uac-invite.xml"), gwPort, 200, 100) }()
	polls, failures := 0, 0
	for finished := false; !finished; {
		select {
		case r := <-done:
			if r.ok != 200 {
				t.Errorf("SIP load: %d of 200 calls", r.ok)
			}
			finished = true
		case <-time.After(50 * time.Millisecond):
			res, err := poll.Get(base + "/healthz")
			polls++
			if err != nil {
				failures++
				continue
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				failures++
			}
		}
	}
	if polls == 0 || failures != 0 {
		t.Errorf("HTTP during SIP load: %d of %d polls failed", failures, polls)
	}
	u.stop()
}
