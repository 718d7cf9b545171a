package test

// A real softphone stack (baresip) through the gateway's SIP edge: registration with digest,
// outgoing calls challenged with 407 and routed to the cluster, incoming calls from the cluster
// over the phone's registered flow, and a phone that vanishes with its TCP connection.
//
// The addresses are chosen so that the edge policy really applies to baresip:
//
//	127.0.0.1    the gateway; also the source of every TCP/TLS connection baresip opens
//	             (whatever its ListenIP), which is no dispatcher destination
//	127.0.0.3    the cluster: the sipp backend is the dispatcher destination, and sipp callers
//	             run from there, so they are trusted by address
//	127.0.0.2x   baresip's ListenIP: its UDP source, and the host of its Contact

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dualgate/dualgate/gateway"
)

const (
	softphonePassword = "dualgate-demo"
	softphoneCluster  = "127.0.0.3"
)

// softphoneGW is a gateway started for a softphone test, with its log.
type softphoneGW struct {
	*gateway.Gateway
	port, tlsPort int
	logs          *lockedWriter
}

// softphoneStartGateway is startGateway that also keeps the log, so tests can assert on it.
func softphoneStartGateway(t *testing.T, port int, yamlCfg string) *softphoneGW {
	t.Helper()
	yamlCfg = strings.ReplaceAll(yamlCfg, "%PORT%", strconv.Itoa(port))
	cfg, err := gateway.Parse([]byte(yamlCfg), t.TempDir())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &lockedWriter{w: &bytes.Buffer{}}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw, err := gateway.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := gw.Stop(ctx); err != nil {
			t.Errorf("stop gateway: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", tail(logs.String(), 30000))
		}
	})
	return &softphoneGW{Gateway: gw, port: port, logs: logs}
}

// softphoneGateway starts a gateway on 127.0.0.1 with UDP and TCP on one port and TLS on
// another (a self-signed certificate), the demo users, numbers 555… routed to set 1, and the
// dispatcher destination sip:127.0.0.3:backend in set 1.
func softphoneGateway(t *testing.T, backend int) *softphoneGW {
	t.Helper()
	usersFile, err := filepath.Abs(filepath.Join("..", "configs", "users.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(usersFile); err != nil {
		t.Fatalf("demo users: %v", err)
	}
	// One PEM with certificate and key: the key file may hold the certificate too.
	combined, certOnly, _ := baresipSelfSigned(t, "dualgate test", "127.0.0.1")
	port, tlsPort := freePort(t), freePort(t)
	for tlsPort == port {
		tlsPort = freePort(t)
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
users_file: %q
sip:
  listen: ["udp:127.0.0.1:%%PORT%%", "tcp:127.0.0.1:%%PORT%%", "tls:127.0.0.1:%d"]
  tls: {cert_file: %q, key_file: %q}
  timers: {response: 1s, invite_final: 10s}
  # baresip 1.0.0 (libre 1.x) answers no challenge at all when any of them names an algorithm
  # other than MD5 (ENOSYS, "Function not implemented"): offering SHA-256 as well, in either
  # order, makes its REGISTER fail. Phones of that generation need MD5 alone.
  auth: {algorithms: [MD5]}
  routes: [{name: numbers, methods: [INVITE], ruri_user: "555[0-9]+", set: 1, algorithm: 4}]
http: {listen: "127.0.0.1:0", jwt: {ephemeral_secret: true}}
dispatcher:
  destinations:
    - {set: 1, uri: "sip:%s:%d"}
  probe: {interval: 60s, timeout: 1s, threshold: 3, recover: 1}
`, usersFile, tlsPort, certOnly, combined, softphoneCluster, backend)
	gw := softphoneStartGateway(t, port, cfg)
	gw.tlsPort = tlsPort
	return gw
}

// logged reports whether the gateway logged msg with these string attributes (name, value
// pairs).
func (g *softphoneGW) logged(msg string, attrs ...string) bool {
lines:
	for _, line := range strings.Split(g.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if v, _ := rec[attrs[i]].(string); v != attrs[i+1] {
				continue lines
			}
		}
		return true
	}
	return false
}

// sipPort is the gateway port for a transport.
func (g *softphoneGW) sipPort(transport string) int {
	if transport == "tls" {
		return g.tlsPort
	}
	return g.port
}

// metric sums the samples of a counter or gauge whose labels include the given pairs.
func (g *softphoneGW) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
						break
					}
				}
				if !found {
					continue samples
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

// softphoneRegister starts baresip registering user over transport through the gateway and
// waits for REGISTER_OK and for the binding in the gateway's location store.
func softphoneRegister(t *testing.T, gw *softphoneGW, user, transport, listenIP string, autoAnswer bool) *baresipUA {
	t.Helper()
	u := baresipStart(t, baresipOpts{User: user, Password: softphonePassword, Transport: transport, Register: true,
		Domain: fmt.Sprintf("127.0.0.1:%d", gw.sipPort(transport)), ListenIP: listenIP, AutoAnswer: autoAnswer})
	ev := u.registered(t, 10*time.Second)
	if ev.Class != "register" || ev.AccountAOR != u.AOR {
		t.Errorf("REGISTER_OK = %+v", ev)
	}
	// The gauge counts bindings in the location store.
	eventually(t, 2*time.Second, "one binding in the location store", func() bool {
		return gw.metric(t, "gateway_sip_registrations") == 1
	})
	// Digest: the first REGISTER was challenged (401), the second accepted.
	if n := gw.metric(t, "gateway_sip_replies_total", "method", "REGISTER", "code", "401"); n != 1 {
		t.Errorf("REGISTER 401s: %v, want 1", n)
	}
	if n := gw.metric(t, "gateway_sip_replies_total", "method", "REGISTER", "code", "200"); n != 1 {
		t.Errorf("REGISTER 200s: %v, want 1", n)
	}
	if n := gw.metric(t, "gateway_sip_auth_total", "result", "ok"); n != 1 {
		t.Errorf("auth ok: %v, want 1", n)
	}
	return u
}

// softphoneUAS starts the sipp backend (uas-rr.xml) on the cluster address.
func softphoneUAS(t *testing.T) (*sippProc, int) {
	t.Helper()
	port := freePort(t)
	return startUASAt(t, softphoneCluster, scenario("uas-rr.xml"), port), port
}

// TestSoftphoneRegistersAndCalls: baresip registers as 1001 through the gateway (401, then
// 200), dials a number the route table sends to the cluster; the gateway challenges the INVITE
// with 407 and baresip answers it with the same credentials; the call is established with the
// sipp backend, baresip hangs up, and the backend saw INVITE, ACK and BYE of that call.
func TestSoftphoneRegistersAndCalls(t *testing.T) {
	requireSipp(t)
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			start := time.Now()
			uas, uasPort := softphoneUAS(t)
			gw := softphoneGateway(t, uasPort)
			u := softphoneRegister(t, gw, "1001", transport, "127.0.0.21", false)
			registeredAt := time.Since(start)

			challenged := gw.metric(t, "gateway_sip_auth_total", "result", "challenged")
			target := fmt.Sprintf("sip:5551000@127.0.0.1:%d", gw.sipPort(transport))
			if err := u.dial(target); err != nil {
				t.Fatal(err)
			}
			est := u.waitEvent(t, "CALL_ESTABLISHED", 10*time.Second)
			if est.Direction != "outgoing" || !strings.Contains(est.PeerURI, "5551000@127.0.0.1") {
				t.Errorf("CALL_ESTABLISHED = %+v", est)
			}
			// The INVITE was challenged once (407) and then authenticated.
			if n := gw.metric(t, "gateway_sip_auth_total", "result", "challenged"); n != challenged+1 {
				t.Errorf("auth challenged %v -> %v, want one more for the INVITE", challenged, n)
			}
			if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "407"); n != 1 {
				t.Errorf("INVITE 407s: %v, want 1", n)
			}
			if n := gw.metric(t, "gateway_sip_auth_total", "result", "ok"); n != 2 {
				t.Errorf("auth ok: %v, want 2 (REGISTER and INVITE)", n)
			}
			if n := gw.metric(t, "gateway_sip_dialogs_active"); n != 1 {
				t.Errorf("dialogs active during the call: %v", n)
			}

			if err := u.hangup(); err != nil {
				t.Fatal(err)
			}
			closed := u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
			if closed.ID != est.ID {
				t.Errorf("closed call %q, established %q", closed.ID, est.ID)
			}
			eventually(t, 5*time.Second, "backend saw the BYE", func() bool { return count(uas.received(t), "BYE") == 1 })
			reqs := uas.received(t)
			if count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
				t.Errorf("backend received %v, want one INVITE, ACK and BYE", reqs)
			}
			for _, r := range reqs {
				if !strings.HasPrefix(r, "OPTIONS ") && !strings.HasSuffix(r, " "+est.ID) {
					t.Errorf("backend request %q is not in call %q", r, est.ID)
				}
			}
			msgs, err := os.ReadFile(uas.msgLog)
			if err != nil {
				t.Fatal(err)
			}
			inv := softphoneFirstRequest(string(msgs), "INVITE")
			if !strings.HasPrefix(inv, "INVITE sip:5551000@") || !strings.Contains(inv, "sip:1001@") {
				t.Errorf("backend INVITE is not 1001 calling 5551000:\n%s", inv)
			}
			// Credentials the gateway checked are not passed on to the cluster.
			if strings.Contains(strings.ToLower(inv), "proxy-authorization") {
				t.Errorf("backend INVITE carries Proxy-Authorization:\n%s", inv)
			}
			eventually(t, 2*time.Second, "dialog ended", func() bool { return gw.metric(t, "gateway_sip_dialogs_active") == 0 })
			t.Logf("%s: registered in %v, call done in %v; events %v", transport, registeredAt, time.Since(start), u.eventTypes())
		})
	}
}

// TestSoftphoneReceivesCallFromCluster: baresip registers as 1002 with auto-answer; a sipp
// caller on the cluster address calls sip:1002@gateway; the gateway sends the call over the
// phone's registered flow (for TLS, the very connection baresip opened: the gateway never
// connects to baresip), baresip answers, sipp ACKs and hangs up through the gateway, and the
// call ends on both sides.
func TestSoftphoneReceivesCallFromCluster(t *testing.T) {
	requireSipp(t)
	for _, transport := range []string{"udp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			start := time.Now()
			_, uasPort := softphoneUAS(t) // the cluster; also the caller's address
			gw := softphoneGateway(t, uasPort)
			u := softphoneRegister(t, gw, "1002", transport, "127.0.0.22", true)
			baresipTLS, err := netip.ParseAddrPort(u.TLSAddr())
			if err != nil {
				t.Fatal(err)
			}
			gwTLS := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(gw.tlsPort))
			var flow []softphoneSocket
			if transport == "tls" {
				flow = softphoneSockets(t, func(s softphoneSocket) bool { return s.local == gwTLS && s.state == tcpEstablished })
				if len(flow) != 1 {
					t.Fatalf("TLS connections accepted by the gateway after REGISTER: %v, want baresip's one", flow)
				}
			}

			res := runSippUAC(t, scenario("uac-invite.xml"), softphoneCluster, fmt.Sprintf("127.0.0.1:%d", gw.port), 1, 1,
				"-s", "1002")
			if res.ok != 1 || res.failed != 0 {
				t.Fatalf("cluster call to 1002: ok=%d failed=%d\n%s", res.ok, res.failed, tail(res.out, 3000))
			}
			// With answermode=auto baresip reports no CALL_INCOMING, only ESTABLISHED.
			est := u.waitEvent(t, "CALL_ESTABLISHED", 5*time.Second)
			cl := u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
			if est.Direction != "incoming" || !strings.HasPrefix(est.PeerURI, "sip:sipp@") || cl.ID != est.ID {
				t.Errorf("established %+v, closed %+v", est, cl)
			}
			// The cluster is trusted by address: no challenge for its INVITE.
			if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "407"); n != 0 {
				t.Errorf("INVITE 407s: %v, want none for the cluster", n)
			}
			if n := gw.metric(t, "gateway_sip_replies_total", "method", "BYE", "code", "200"); n != 1 {
				t.Errorf("BYE 200s relayed: %v, want 1", n)
			}
			// INVITE, ACK and BYE reached baresip over its registered flow: over UDP from the
			// gateway's listening socket to the address baresip registered from, over TLS on the
			// connection baresip opened (its SIP trace names each message's socket pair).
			flowLine := fmt.Sprintf("UDP 127.0.0.1:%d -> %s", gw.port, u.SIPAddr())
			if transport == "tls" {
				flowLine = fmt.Sprintf("TLS %s -> %s", gwTLS, flow[0].remote)
			}
			for _, m := range []string{"INVITE", "ACK", "BYE"} {
				if got := softphoneTraceFlow(u.Log(), m+" sip:1002"); got != flowLine {
					t.Errorf("baresip received the %s over %q, want %q", m, got, flowLine)
				}
			}
			if transport == "tls" {
				// Still just the one connection baresip opened, and nothing ever touched
				// baresip's own TLS listener: the gateway dialled nobody.
				now := softphoneSockets(t, func(s softphoneSocket) bool { return s.local == gwTLS && s.state == tcpEstablished })
				if len(now) != 1 || now[0].remote != flow[0].remote {
					t.Errorf("gateway TLS connections after the call: %v, before: %v", now, flow)
				}
				if touched := softphoneSockets(t, func(s softphoneSocket) bool {
					return s.state != tcpListen && (s.local == baresipTLS || s.remote == baresipTLS)
				}); len(touched) != 0 {
					t.Errorf("connections to baresip's TLS listener %v: %v", baresipTLS, touched)
				}
			}
			eventually(t, 2*time.Second, "dialog ended", func() bool { return gw.metric(t, "gateway_sip_dialogs_active") == 0 })
			t.Logf("%s: call answered and ended in %v; events %v", transport, time.Since(start), u.eventTypes())
		})
	}
}

// TestSoftphoneGoneMeans480: baresip registers over TCP as 1001 and is then killed (SIGKILL,
// so it cannot un-REGISTER): its TCP connection closes, the gateway drops the binding at once,
// and a call from the cluster to 1001 gets 480 within a second.
func TestSoftphoneGoneMeans480(t *testing.T) {
	requireSipp(t)
	_, uasPort := softphoneUAS(t)
	gw := softphoneGateway(t, uasPort)
	u := softphoneRegister(t, gw, "1001", "tcp", "127.0.0.23", false)

	if err := syscall.Kill(u.Pid(), syscall.SIGKILL); err != nil {
		t.Fatalf("kill baresip %d: %v", u.Pid(), err)
	}
	select {
	case <-u.done:
	case <-time.After(5 * time.Second):
		t.Fatal("baresip did not die on SIGKILL")
	}
	gone := eventually(t, time.Second, "binding removed with its connection", func() bool {
		return gw.logged("connection closed, bindings removed") && gw.metric(t, "gateway_sip_registrations") == 0
	})
	// The binding went with the connection: baresip had no chance to un-REGISTER.
	if n := gw.metric(t, "gateway_sip_requests_total", "method", "REGISTER"); n != 2 {
		t.Errorf("REGISTER requests: %v, want 2 (challenged and accepted, no un-REGISTER)", n)
	}

	scen := templated(t, "uac-expect.xml", map[string]string{"EXPECT": "480", "MAXFWD": "70"})
	msgLog := filepath.Join(t.TempDir(), "messages.log")
	// -recv_timeout: the 480 must come within a second of the INVITE, or the call fails.
	res := runSippUAC(t, scen, softphoneCluster, fmt.Sprintf("127.0.0.1:%d", gw.port), 1, 1, "-s", "1001",
		"-recv_timeout", "1000", "-trace_msg", "-message_file", msgLog)
	if res.ok != 1 || res.failed != 0 {
		t.Fatalf("call to the gone phone: ok=%d failed=%d, want a 480 within 1s\n%s", res.ok, res.failed, tail(res.out, 3000))
	}
	took := softphoneLatency(t, msgLog, "INVITE sip:1001@", "SIP/2.0 480 ")
	if took < 0 || took > time.Second {
		t.Errorf("INVITE to 480: %v, want under a second", took)
	}
	if n := gw.metric(t, "gateway_sip_rejected_total", "reason", "not_registered"); n != 1 {
		t.Errorf("rejected not_registered: %v, want 1", n)
	}
	if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "480"); n != 1 {
		t.Errorf("INVITE 480s: %v, want 1", n)
	}
	t.Logf("binding gone %v after baresip died; INVITE answered 480 in %v", gone, took)
}

// TestSoftphoneOutboundProxy: a phone configured with the gateway as its outbound proxy
// preloads Route: <gateway;lr> on every request. That Route must not carry a request past the
// edge: the REGISTER is still the phone's own (its binding is its real source), and a call
// dialled straight at a cluster address is still challenged, authenticated and routed by the
// route table, with the preloaded Route not passed on. Without credentials nothing reaches the
// cluster.
func TestSoftphoneOutboundProxy(t *testing.T) {
	requireSipp(t)
	t.Run("registered", func(t *testing.T) {
		start := time.Now()
		uas, uasPort := softphoneUAS(t)
		gw := softphoneGateway(t, uasPort)
		u := baresipStart(t, baresipOpts{User: "1001", Password: softphonePassword, Register: true, Outbound: true,
			Domain: fmt.Sprintf("127.0.0.1:%d", gw.port), ListenIP: "127.0.0.24"})
		u.registered(t, 10*time.Second)
		eventually(t, 2*time.Second, "one binding", func() bool { return gw.metric(t, "gateway_sip_registrations") == 1 })
		// The registrar saw the REGISTER from baresip itself, not relayed back to itself.
		if !gw.logged("registered", "user", "1001", "remote", u.SIPAddr()) {
			t.Errorf("no registration of 1001 from %s in the gateway log", u.SIPAddr())
		}

		if err := u.dial(fmt.Sprintf("sip:5551000@%s:%d", softphoneCluster, uasPort)); err != nil {
			t.Fatal(err)
		}
		est := u.waitEvent(t, "CALL_ESTABLISHED", 10*time.Second)
		if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "407"); n != 1 {
			t.Errorf("INVITE 407s: %v, want 1: a preloaded Route must not skip digest", n)
		}
		if err := u.hangup(); err != nil {
			t.Fatal(err)
		}
		u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
		eventually(t, 5*time.Second, "backend saw the BYE", func() bool { return count(uas.received(t), "BYE") == 1 })
		reqs := uas.received(t)
		if count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 {
			t.Errorf("backend received %v", reqs)
		}
		msgs, err := os.ReadFile(uas.msgLog)
		if err != nil {
			t.Fatal(err)
		}
		inv := strings.ToLower(softphoneFirstRequest(string(msgs), "INVITE"))
		inv, _, _ = strings.Cut(inv, "\n\n") // headers only
		if !strings.Contains(inv, fmt.Sprintf("record-route: <sip:127.0.0.1:%d", gw.port)) {
			t.Errorf("backend INVITE was not record-routed by the gateway:\n%s", inv)
		}
		if strings.Contains(inv, "\nroute:") || strings.Contains(inv, "proxy-authorization") {
			t.Errorf("backend INVITE carries the phone's preloaded Route or its credentials:\n%s", inv)
		}
		t.Logf("call %s via the outbound proxy in %v; events %v", est.ID, time.Since(start), u.eventTypes())
	})
	t.Run("wrong-password", func(t *testing.T) {
		uas, uasPort := softphoneUAS(t)
		gw := softphoneGateway(t, uasPort)
		u := baresipStart(t, baresipOpts{User: "1001", Password: "not-the-password", Outbound: true,
			Domain: fmt.Sprintf("127.0.0.1:%d", gw.port), ListenIP: "127.0.0.24"})
		if err := u.dial(fmt.Sprintf("sip:5551000@%s:%d", softphoneCluster, uasPort)); err != nil {
			t.Fatal(err)
		}
		cl := u.waitEvent(t, "CALL_CLOSED", 10*time.Second)
		if slices.Contains(u.eventTypes(), "CALL_ESTABLISHED") {
			t.Errorf("call established with a wrong password: events %v", u.eventTypes())
		}
		if n := gw.metric(t, "gateway_sip_auth_total", "result", "failed"); n != 1 {
			t.Errorf("auth failed: %v, want 1", n)
		}
		time.Sleep(200 * time.Millisecond) // anything relayed would have arrived by now
		if reqs := uas.received(t); count(reqs, "INVITE") != 0 {
			t.Errorf("an unauthenticated call reached the cluster: %v", reqs)
		}
		t.Logf("closed: %s; events %v", cl.Param, u.eventTypes())
	})
}

// softphoneFirstRequest returns the first request of this method in a sipp message log.
func softphoneFirstRequest(msgs, method string) string {
	for _, block := range strings.Split(msgs, "----------------------------------------------- ") {
		if !strings.Contains(block, "message received") {
			continue
		}
		if i := strings.Index(block, method+" sip:"); i >= 0 {
			return block[i:]
		}
	}
	return ""
}

// softphoneTraceFlow finds the first message in baresip's SIP trace (-s) that starts with
// start and returns the line above it, "TRANSPORT src -> dst".
func softphoneTraceFlow(log, start string) string {
	i := strings.Index(log, "\n"+start)
	if i < 0 {
		return ""
	}
	head := log[:i]
	return strings.TrimSpace(head[strings.LastIndex(head, "\n")+1:])
}

// softphoneLatency reads a sipp -trace_msg log and returns the time from the first message
// sent that starts with from to the first message received after it that starts with to
// (-1 when either is missing).
func softphoneLatency(t *testing.T, path, from, to string) time.Duration {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sent time.Time
	for _, block := range strings.Split(string(data), "----------------------------------------------- ")[1:] {
		head, body, _ := strings.Cut(block, "\n")
		at, err := time.Parse("2006-01-02 15:04:05.000000", strings.TrimSpace(head))
		if err != nil {
			continue
		}
		// The message follows a "UDP message sent (N bytes):" line and an empty line.
		_, msg, _ := strings.Cut(body, "\n\n")
		switch {
		case sent.IsZero() && strings.Contains(body, "message sent") && strings.HasPrefix(msg, from):
			sent = at
		case !sent.IsZero() && strings.Contains(body, "message received") && strings.HasPrefix(msg, to):
			return at.Sub(sent)
		}
	}
	t.Logf("no %q then %q in:\n%s", from, to, tail(string(data), 3000))
	return -1
}

// TCP states in /proc/net/tcp.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// softphoneSocket is one IPv4 TCP socket of this network namespace.
type softphoneSocket struct {
	local, remote netip.AddrPort
	state         string
}

func (s softphoneSocket) String() string {
	return s.local.String() + "->" + s.remote.String() + "/" + s.state
}

// softphoneSockets lists the IPv4 TCP sockets (from /proc/net/tcp) for which keep is true.
func softphoneSockets(t *testing.T, keep func(softphoneSocket) bool) []softphoneSocket {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []softphoneSocket
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		l, lok := softphoneProcAddr(fs[1])
		r, rok := softphoneProcAddr(fs[2])
		if !lok || !rok {
			continue
		}
		s := softphoneSocket{local: l, remote: r, state: fs[3]}
		if keep(s) {
			out = append(out, s)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// softphoneProcAddr parses "0100007F:1F90" (the address in host byte order, little-endian here).
func softphoneProcAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(h)
	port, perr := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || perr != nil || len(b) != 4 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]}), uint16(port)), true
}
