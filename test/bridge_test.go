package test

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dualgate/dualgate/gateway"
)

// The WebSocket bridge (RFC 7118) seen from a non-browser agent: a Go WebSocket client that
// speaks SIP the way a browser stack does (Via transport WSS, .invalid hosts, no
// Content-Length), against the gateway with sipp as the cluster.

func bridgeGateway(t *testing.T, backend int) (*gateway.Gateway, int) {
	t.Helper()
	gwPort := freePort(t)
	cfg := edgeConfig(t, backend, "") + "bridge: {rate: 20, burst: 20, max_frame: 8192}\n"
	return startGateway(t, gwPort, cfg), gwPort
}

type wsAgent struct {
	t    *testing.T
	c    *websocket.Conn
	user string
	seq  int
}

func loginToken(t *testing.T, gw *gateway.Gateway, user string) string {
	t.Helper()
	code, body := adminCall(t, gw, "POST", "/api/login", "", `{"username":"`+user+`","password":"`+demoPassword+`"}`)
	m := regexp.MustCompile(`"token":"([^"]+)"`).FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("login %s: %d %s", user, code, body)
	}
	return m[1]
}

func dialWS(gw *gateway.Gateway, token, origin string, protocols ...string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		h.Set("Origin", origin)
	}
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 3 * time.Second}
	return d.Dial("ws://"+gw.HTTPAddr()+"/ws", h)
}

func connectAgent(t *testing.T, gw *gateway.Gateway, user string) *wsAgent {
	t.Helper()
	c, res, err := dialWS(gw, loginToken(t, gw, user), "http://"+gw.HTTPAddr(), "sip")
	if err != nil {
		t.Fatalf("agent %s: upgrade failed: %v (%v)", user, err, res)
	}
	t.Cleanup(func() { c.Close() })
	return &wsAgent{t: t, c: c, user: user}
}

func (a *wsAgent) send(msg string) {
	a.t.Helper()
	if err := a.c.WriteMessage(websocket.TextMessage, []byte(strings.ReplaceAll(msg, "\n", "\r\n"))); err != nil {
		a.t.Fatalf("send: %v", err)
	}
}

// next returns the next frame, skipping provisional responses when skip100 is set; "" on timeout.
func (a *wsAgent) next(wait time.Duration) string {
	_ = a.c.SetReadDeadline(time.Now().Add(wait))
	_, data, err := a.c.ReadMessage()
	if err != nil {
		return ""
	}
	return string(data)
}

// expect reads frames until one starts with prefix (a status line or a request method).
func (a *wsAgent) expect(prefix string, wait time.Duration) string {
	a.t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m := a.next(time.Until(deadline))
		if strings.HasPrefix(m, prefix) {
			return m
		}
	}
	a.t.Fatalf("agent %s: no %q within %v", a.user, prefix, wait)
	return ""
}

func (a *wsAgent) register(aor string) string {
	a.seq++
	// No Content-Length, as browsers send it (RFC 7118 §5).
	a.send(fmt.Sprintf(`REGISTER sip:127.0.0.1 SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws%d%d
Max-Forwards: 70
To: <sip:%s@127.0.0.1>
From: <sip:%s@127.0.0.1>;tag=ws%d
Call-ID: reg-%s-%d
CSeq: %d REGISTER
Contact: <sip:%s@df7jal23ls0d.invalid;transport=ws>;expires=600

`, time.Now().UnixNano(), a.seq, aor, aor, a.seq, a.user, time.Now().UnixNano(), a.seq, a.user))
	return a.expect("SIP/2.0 ", 2*time.Second)
}

// answer takes an INVITE that arrived on the socket and answers it 200 with our Contact.
func (a *wsAgent) answer(invite string) {
	a.t.Helper()
	hdr := func(name string) string {
		return strings.TrimRight(regexp.MustCompile(`(?mi)^`+name+`:.*$`).FindString(invite), "\r")
	}
	var vias, rrs []string
	for _, l := range strings.Split(invite, "\r\n") {
		switch {
		case strings.HasPrefix(l, "Via:"):
			vias = append(vias, l)
		case strings.HasPrefix(l, "Record-Route:"):
			rrs = append(rrs, l)
		}
	}
	body := "v=0\r\no=agent 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
	msg := ("SIP/2.0 200 OK\n" + strings.Join(vias, "\n") + "\n" + strings.Join(rrs, "\n") + "\n" + hdr("From") + "\n" + hdr("To") + ";tag=agent" + strconv.Itoa(a.seq) +
		"\n" + hdr("Call-ID") + "\n" + hdr("CSeq") + "\nContact: <sip:" + a.user + "@df7jal23ls0d.invalid;transport=ws>\nContent-Type: application/sdp\n\n" + strings.ReplaceAll(body, "\r\n", "\n"))
	a.send(msg)
}

func TestBridgeUpgradeRefusals(t *testing.T) {
	gw, _ := bridgeGateway(t, freePort(t))
	origin := "http://" + gw.HTTPAddr()
	tok := loginToken(t, gw, "1001")
	admin := loginToken(t, gw, "admin")
	for _, tc := range []struct {
		name, token, origin string
		protocols           []string
		want                int
	}{
		{"no token", "", origin, []string{"sip"}, 401},
		{"bad token", tok + "x", origin, []string{"sip"}, 401},
		{"admin is no agent", admin, origin, []string{"sip"}, 403},
		{"foreign origin", tok, "https://evil.example", []string{"sip"}, 403},
		{"no sip subprotocol", tok, origin, []string{"chat"}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, res, err := dialWS(gw, tc.token, tc.origin, tc.protocols...)
			if err == nil {
				c.Close()
				t.Fatal("upgrade succeeded")
			}
			if res == nil || res.StatusCode != tc.want {
				t.Fatalf("got %v, want %d", res, tc.want)
			}
		})
	}
}

func TestBridgeIdentityAndBadFrames(t *testing.T) {
	gw, _ := bridgeGateway(t, freePort(t))
	a := connectAgent(t, gw, "1001")
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("agent REGISTER (no digest, no Content-Length): %q", firstLine([]byte(got)))
	}
	if n := metric(t, gw, "gateway_sip_registrations"); n != 1 {
		t.Fatalf("%v bindings after the agent registered, want 1", n)
	}
	if got := a.register("1002"); !strings.HasPrefix(got, "SIP/2.0 403") {
		t.Fatalf("REGISTER as another user: want 403, got %q", firstLine([]byte(got)))
	}
	// A frame that is not SIP: nothing to answer, nothing passed on, the socket lives.
	a.send("hello, is this SIP?\n\n")
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("after a non-SIP frame: %q", firstLine([]byte(got)))
	}
	// A malformed request (CSeq method not the request's, RFC 4475 mismatch01) gets 400.
	a.send("OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKbad\nCSeq: 1 INVITE\nCall-ID: bad\nFrom: <sip:1001@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nMax-Forwards: 70\n\n")
	if got := a.expect("SIP/2.0 ", 2*time.Second); !strings.HasPrefix(got, "SIP/2.0 400") {
		t.Fatalf("malformed request: %q", firstLine([]byte(got)))
	}
	if metric(t, gw, "gateway_bridge_refused_total", "reason", "identity") != 1 {
		t.Error("the identity refusal was not counted")
	}
	// Two messages in one frame, the second acting as another user: the router reads the flow
	// as a stream, so the frame is refused whole (RFC 7118: one message per frame) and neither
	// message registers anything; the socket lives.
	smuggle := func(user, branch string) string {
		return "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bK" + branch +
			"\nFrom: <sip:" + user + "@127.0.0.1>;tag=s\nTo: <sip:" + user + "@127.0.0.1>\nCall-ID: smuggle-" + branch +
			"\nCSeq: 1 REGISTER\nContact: <sip:" + user + "@x.invalid;transport=ws>\nMax-Forwards: 70\nContent-Length: 0\n\n"
	}
	a.send(smuggle("1001", "s1") + smuggle("1002", "s2"))
	if got := a.expect("SIP/2.0 ", 2*time.Second); !strings.HasPrefix(got, "SIP/2.0 400 Bad Request: One Message Per Frame") {
		t.Fatalf("two messages in one frame: %q", firstLine([]byte(got)))
	}
	if n := metric(t, gw, "gateway_sip_registrations"); n != 1 {
		t.Fatalf("%v bindings after the two-message frame, want still 1", n)
	}
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("after the two-message frame: %q", firstLine([]byte(got)))
	}

	// An oversized frame closes the socket; the gateway keeps serving others.
	b := connectAgent(t, gw, "1002")
	b.send("OPTIONS sip:127.0.0.1 SIP/2.0\nX-Pad: " + strings.Repeat("a", 9000) + "\n\n")
	if m := b.next(2 * time.Second); m != "" {
		t.Fatalf("oversized frame: want the socket closed, got %q", firstLine([]byte(m)))
	}
	// A flood of frames closes the socket too.
	c := connectAgent(t, gw, "1002")
	for i := 0; i < 100; i++ {
		if err := c.c.WriteMessage(websocket.TextMessage, []byte("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKf"+strconv.Itoa(i)+
			"\r\nCSeq: 1 OPTIONS\r\nCall-ID: f"+strconv.Itoa(i)+"\r\nFrom: <sip:1002@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nMax-Forwards: 70\r\n\r\n")); err != nil {
			break
		}
	}
	eventually(t, 3*time.Second, "the flooding socket is closed", func() bool {
		_ = c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, err := c.c.ReadMessage()
		return err != nil && !strings.Contains(err.Error(), "timeout")
	})
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("the first agent after the flood: %q", firstLine([]byte(got)))
	}
}

// TestBridgeCallsBothWays: the cluster calls an agent on its socket; the agent answers, the
// cluster hangs up. Then the socket closes and a call to the agent gets 480 at once.
func TestBridgeCallsBothWays(t *testing.T) {
	requireSipp(t)
	backend := freePort(t)
	gw, gwPort := bridgeGateway(t, backend)
	a := connectAgent(t, gw, "1001")
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("agent REGISTER: %q", firstLine([]byte(got)))
	}
	target := fmt.Sprintf("127.0.0.1:%d", gwPort)
	done := make(chan uacResult, 1)
	go func() {
		done <- runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.3", 0, target, 1, "-s", "1001", "-d", "200")
	}()
	inv := a.expect("INVITE ", 5*time.Second)
	if !strings.Contains(inv, "sip:1001@df7jal23ls0d.invalid") {
		t.Errorf("the INVITE's Request-URI is not the agent's Contact:\n%s", inv)
	}
	if strings.Contains(inv, "127.0.0.3") && strings.Contains(strings.SplitN(inv, "\r\n\r\n", 2)[0], "Contact: <sip:127.0.0.3") {
		t.Errorf("the cluster's Contact reached the agent")
	}
	a.answer(inv)
	a.expect("ACK ", 3*time.Second)
	bye := a.expect("BYE ", 3*time.Second)
	a.send(okFor(bye))
	if res := <-done; res.ok != 1 {
		t.Fatalf("cluster to agent: call failed\n%s", tail(res.out, 3000))
	}

	// Closing the socket drops the binding at once: the next call gets 480.
	a.c.Close()
	eventually(t, time.Second, "the agent's binding is gone", func() bool { return metric(t, gw, "gateway_sip_registrations") == 0 })
	scen := templated(t, "uac-expect.xml", map[string]string{"EXPECT": "480", "MAXFWD": "70"})
	if res := runSippFrom(t, scen, "127.0.0.3", 0, target, 1, "-s", "1001"); res.ok != 1 {
		t.Fatalf("call to an agent whose socket closed: want 480\n%s", tail(res.out, 3000))
	}
}

// okFor builds the 200 for an in-dialog request that arrived on the socket.
func okFor(req string) string {
	var keep []string
	for _, l := range strings.Split(strings.SplitN(req, "\r\n\r\n", 2)[0], "\r\n")[1:] {
		for _, h := range []string{"Via:", "From:", "To:", "Call-ID:", "CSeq:"} {
			if strings.HasPrefix(l, h) {
				keep = append(keep, l)
			}
		}
	}
	return "SIP/2.0 200 OK\n" + strings.Join(keep, "\n") + "\nContent-Length: 0\n\n"
}

// TestBridgeAgentCallsNumber: an agent's call to a number goes to the dispatcher's backend;
// its ACK and BYE follow the Record-Route and the sealed Contact back to that backend. An
// INVITE as another user is refused on the socket.
func TestBridgeAgentCallsNumber(t *testing.T) {
	requireSipp(t)
	backend := freePort(t)
	gw, _ := bridgeGateway(t, backend)
	uas := startUASAt(t, "127.0.0.3", scenario("uas-rr.xml"), backend)
	a := connectAgent(t, gw, "1001")
	if got := a.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("agent REGISTER: %q", firstLine([]byte(got)))
	}
	invite := func(from string) string {
		return fmt.Sprintf(`INVITE sip:5551000@127.0.0.1 SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKinv%s
Max-Forwards: 70
To: <sip:5551000@127.0.0.1>
From: <sip:%s@127.0.0.1>;tag=agentcall
Call-ID: agent-call-%s
CSeq: 1 INVITE
Contact: <sip:1001@df7jal23ls0d.invalid;transport=ws;ob>
Content-Type: application/sdp

v=0
o=agent 1 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 9 UDP/TLS/RTP/SAVPF 0
`, from, from, from)
	}
	a.send(invite("1002"))
	if got := a.expect("SIP/2.0 ", 2*time.Second); !strings.HasPrefix(got, "SIP/2.0 403") {
		t.Fatalf("INVITE as 1002 on 1001's socket: want 403, got %q", firstLine([]byte(got)))
	}
	a.send(invite("1001"))
	ok := a.expect("SIP/2.0 200", 5*time.Second)
	if strings.Contains(strings.SplitN(ok, "\r\n\r\n", 2)[0], "127.0.0.3") {
		t.Errorf("a cluster address reached the agent in the 200:\n%s", ok)
	}
	// Route set from the Record-Route (reversed), next hop the Contact.
	var rrs []string
	for _, l := range strings.Split(ok, "\r\n") {
		if v, found := strings.CutPrefix(l, "Record-Route: "); found {
			rrs = append([]string{v}, rrs...)
		}
	}
	contact := regexp.MustCompile(`(?m)^Contact: <([^>]+)>`).FindStringSubmatch(ok)
	toTag := regexp.MustCompile(`(?m)^To: .*;tag=([^;\r\n]+)`).FindStringSubmatch(ok)
	if contact == nil || toTag == nil || len(rrs) == 0 {
		t.Fatalf("200 lacks Contact, To tag or Record-Route:\n%s", ok)
	}
	inDialog := func(method string, cseq int) string {
		return fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK%s%d\nMax-Forwards: 70\nRoute: %s\n"+
			"To: <sip:5551000@127.0.0.1>;tag=%s\nFrom: <sip:1001@127.0.0.1>;tag=agentcall\nCall-ID: agent-call-1001\nCSeq: %d %s\n\n",
			method, contact[1], strings.ToLower(method), cseq, strings.Join(rrs, ", "), toTag[1], cseq, method)
	}
	a.send(inDialog("ACK", 1))
	time.Sleep(100 * time.Millisecond)
	a.send(inDialog("BYE", 2))
	a.expect("SIP/2.0 200", 3*time.Second)
	uas.stop()
	if reqs := uas.received(t); count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
		t.Fatalf("backend received %v, want INVITE, ACK, BYE", reqs)
	}
}
