package sip

import (
	"net/netip"
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

func parseReq(t *testing.T, raw string) *gosip.Request {
	t.Helper()
	raw = strings.ReplaceAll(strings.TrimLeft(raw, "\n"), "\n", "\r\n")
	msg, err := gosip.NewParser().ParseSIP([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return msg.(*gosip.Request)
}

const inviteTmpl = `INVITE sip:1000@gw.example.com SIP/2.0
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-1
%ROUTE%From: <sip:agent@example.com>;tag=f1
To: <sip:1000@gw.example.com>%TOTAG%
Call-ID: c1@example.com
CSeq: 1 INVITE
Max-Forwards: 70
Content-Length: 0

`

func invite(t *testing.T, route, totag string) *gosip.Request {
	s := strings.ReplaceAll(inviteTmpl, "%ROUTE%", route)
	return parseReq(t, strings.ReplaceAll(s, "%TOTAG%", totag))
}

// testRouter is a router whose address state is filled in as Start would.
func testRouter() *Router {
	r := &Router{viaHost: "192.0.2.10", ports: map[string]int{"udp": 5060, "tcp": 5060},
		self: map[string]bool{"192.0.2.10:5060": true, "127.0.0.1:5060": true}}
	return r
}

func TestLooseRoute(t *testing.T) {
	r := testRouter()
	tests := []struct {
		name, route string
		ours        bool
		wantAddr    string
		wantTr      string
		wantPop     int
	}{
		{"no Route: not ours to route", "", false, "", "", 0},
		{"foreign Route", "Route: <sip:203.0.113.5;lr>\n", false, "", "", 0},
		{"our Route only: go to the Request-URI", "Route: <sip:192.0.2.10;lr>\n", true, "gw.example.com:5060", "UDP", 1},
		{"our Route then the next hop", "Route: <sip:192.0.2.10:5060;lr>, <sip:198.51.100.7:5070;transport=tcp;lr>\n", true, "198.51.100.7:5070", "TCP", 1},
		{"double Record-Route after a transport change (RFC 5658)", "Route: <sip:192.0.2.10;transport=tcp;lr>\nRoute: <sip:192.0.2.10;lr>\n", true, "gw.example.com:5060", "UDP", 2},
		{"default port of sips is 5061, which is not ours", "Route: <sips:192.0.2.10;lr>\n", false, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := invite(t, tt.route, ";tag=t1")
			next, ok := r.looseRoute(req)
			if ok != tt.ours {
				t.Fatalf("looseRoute ours=%v, want %v", ok, tt.ours)
			}
			if ok && (next.addr != tt.wantAddr || next.transport != tt.wantTr) {
				t.Errorf("next hop %s/%s, want %s/%s", next.addr, next.transport, tt.wantAddr, tt.wantTr)
			}
			before := len(req.GetHeaders("Route"))
			if next.popRoutes != tt.wantPop {
				t.Errorf("pops %d Route entries, want %d", next.popRoutes, tt.wantPop)
			}
			if !ok {
				return
			}
			// The received request is left alone; the copy we send loses our entries.
			fwd := forwardCopy(req)
			r.prepareForward(fwd, req, next, false, "z9hG4bK-dgtest")
			if n := len(req.GetHeaders("Route")); n != before {
				t.Errorf("received request changed: %d Route headers, had %d", n, before)
			}
			if n := len(fwd.GetHeaders("Route")); n != before-tt.wantPop {
				t.Errorf("forwarded request has %d Route headers, want %d", n, before-tt.wantPop)
			}
		})
	}
}

func TestLoopDetection(t *testing.T) {
	r := testRouter()
	req := invite(t, "", "")
	if r.isLoop(req) {
		t.Fatal("a fresh request is not a loop")
	}
	// What we would send: our Via carries the hash of the request as received.
	fwd := forwardCopy(req)
	r.prepareForward(fwd, req, target{addr: "127.0.0.1:5070", host: "127.0.0.1", transport: "UDP"}, true, r.branchID(req))
	if !r.isLoop(fwd) {
		t.Error("our own forwarded request coming back unchanged must be a loop")
	}
	// A spiral: the request comes back with another Request-URI (e.g. after a rewrite).
	spiral := fwd.Clone()
	spiral.Recipient.User = "2000"
	if r.isLoop(spiral) {
		t.Error("a request that changed its Request-URI is a spiral, not a loop")
	}
	// Someone else's Via with our address but no hash of ours.
	other := invite(t, "", "")
	other.PrependHeader(&gosip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: "192.0.2.10", Port: 5060, Params: gosip.HeaderParams{{K: "branch", V: "z9hG4bK-foreign"}}})
	if r.isLoop(other) {
		t.Error("a Via with a foreign branch is not a loop")
	}
}

func TestPrepareForward(t *testing.T) {
	r := testRouter()
	req := invite(t, "", "")
	req.SetSource("198.51.100.9:40000")
	req.SetTransport("UDP")
	fwd := forwardCopy(req)
	r.prepareForward(fwd, req, target{addr: "127.0.0.1:5070", host: "127.0.0.1", transport: "TCP"}, true, "z9hG4bK-dgtest")
	if mf := fwd.MaxForwards().Val(); mf != 69 {
		t.Errorf("Max-Forwards %d, want 69", mf)
	}
	if mf := req.MaxForwards().Val(); mf != 70 {
		t.Errorf("the received request's Max-Forwards changed to %d", mf)
	}
	vias := fwd.GetHeaders("Via")
	if len(vias) != 2 || !strings.Contains(vias[0].Value(), "TCP 192.0.2.10:5060;branch=z9hG4bK-dgtest") {
		t.Fatalf("Vias: %v", vias)
	}
	if v := vias[1].Value(); !strings.Contains(v, "received=198.51.100.9") || !strings.Contains(v, "rport=40000") {
		t.Errorf("caller's Via not stamped with its source: %s", v)
	}
	if v := req.Via().Value(); strings.Contains(v, "received=") {
		t.Errorf("the received request's Via was edited (sipgo reads it concurrently): %s", v)
	}
	rr := fwd.GetHeaders("Record-Route")
	if len(rr) != 2 || !strings.Contains(rr[0].Value(), "transport=tcp") || strings.Contains(rr[1].Value(), "transport") {
		t.Errorf("UDP in, TCP out: want double Record-Route, TCP entry on top; got %v", rr)
	}
	if fwd.Transport() != "TCP" || fwd.Destination() != "127.0.0.1:5070" {
		t.Errorf("sent over %s to %s", fwd.Transport(), fwd.Destination())
	}
}

func TestRouteMatch(t *testing.T) {
	mustRoute := func(rc RouteConfig) route {
		rt, err := compileRoute(rc)
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	src := netip.MustParseAddr("10.0.0.7")
	tests := []struct {
		name string
		rc   RouteConfig
		m, u string
		h    string
		want bool
	}{
		{"method default is INVITE", RouteConfig{Set: 1, Algorithm: 4}, "INVITE", "1000", "x", true},
		{"other methods do not match by default", RouteConfig{Set: 1, Algorithm: 4}, "MESSAGE", "1000", "x", false},
		{"user regexp matches the whole user", RouteConfig{RURIUser: "8[0-9]{3}", Set: 1, Algorithm: 4}, "INVITE", "8123", "x", true},
		{"user regexp is anchored", RouteConfig{RURIUser: "8[0-9]{3}", Set: 1, Algorithm: 4}, "INVITE", "98123", "x", false},
		{"domain case-insensitive", RouteConfig{RURIDomain: "pbx\\.example\\.com", Set: 1, Algorithm: 4}, "INVITE", "1", "PBX.example.com", true},
		{"source inside CIDR", RouteConfig{Sources: []string{"10.0.0.0/24"}, Set: 1, Algorithm: 4}, "INVITE", "1", "x", true},
		{"source outside CIDR", RouteConfig{Sources: []string{"10.0.1.0/24"}, Set: 1, Algorithm: 4}, "INVITE", "1", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := mustRoute(tt.rc)
			if got := rt.match(tt.m, tt.u, tt.h, src); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := Defaults()
	bad.Listen = []string{"udp:127.0.0.1", "ws:127.0.0.1:80"}
	bad.Advertise = "a:b:c"
	bad.Timers.Response = 0
	bad.RetryAfter = -1
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"udp:127.0.0.1", "ws", "advertise", "timers", "retry_after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	for _, ok := range []string{"gw.example.com", "gw.example.com:5080", "192.0.2.1", "[2001:db8::1]:5060", "2001:db8::1"} {
		if _, _, err := splitAdvertise(ok); err != nil {
			t.Errorf("advertise %q rejected: %v", ok, err)
		}
	}
}

func TestDigestUsername(t *testing.T) {
	for in, want := range map[string]string{
		`Digest username="1001", realm="x", nonce="n"`: "1001",
		`Digest realm="x", username=bob, nonce="n"`:    "bob",
		`Digest realm="x"`:                             "",
	} {
		if got := digestUsername(in); got != want {
			t.Errorf("digestUsername(%q) = %q, want %q", in, got, want)
		}
	}
}
