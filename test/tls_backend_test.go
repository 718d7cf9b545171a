package test

// The cluster reached over TLS: the dispatcher destination says ;transport=tls, and the gateway
// verifies the backend's certificate against sip.tls.ca_file. The backend is a real baresip
// listening for TLS on the cluster address.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// tlsBackendGateway starts a gateway as edgeConfig does (trunk 127.0.0.8 to set 1), but whose
// only set 1 destination is sip:127.0.0.3:tlsPort;transport=tls, verified against caFile.
func tlsBackendGateway(t *testing.T, tlsPort int, caFile string) *softphoneGW {
	t.Helper()
	cfg := edgeConfig(t, tlsPort, fmt.Sprintf("  tls: {ca_file: %q}", caFile))
	plain := fmt.Sprintf(`uri: "sip:127.0.0.3:%d"`, tlsPort)
	if !strings.Contains(cfg, plain) {
		t.Fatalf("edgeConfig has no destination %s:\n%s", plain, cfg)
	}
	cfg = strings.Replace(cfg, plain, fmt.Sprintf(`uri: "sip:127.0.0.3:%d;transport=tls"`, tlsPort), 1)
	return softphoneStartGateway(t, freePort(t), cfg)
}

// tlsBackendBaresip starts baresip as the backend: AOR user 5551000 on 127.0.0.3, auto-answer,
// no registration, with the certificate certFile (cert+key) on its TLS listener.
func tlsBackendBaresip(t *testing.T, certFile string) *baresipUA {
	t.Helper()
	return baresipStart(t, baresipOpts{User: "5551000", ListenIP: softphoneCluster, AutoAnswer: true, CertFile: certFile})
}

// tlsBackendConns lists established TCP connections to addr.
func tlsBackendConns(t *testing.T, addr netip.AddrPort) []softphoneSocket {
	t.Helper()
	return softphoneSockets(t, func(s softphoneSocket) bool { return s.remote == addr && s.state == tcpEstablished })
}

// TestTLSBackend: a trunk's call goes to a baresip backend over TLS, the backend's certificate
// verified against sip.tls.ca_file; with a CA that did not sign it the handshake fails, the
// call never reaches baresip and the caller gets 503.
func TestTLSBackend(t *testing.T) {
	requireSipp(t)
	baresipRequire(t)

	t.Run("verified", func(t *testing.T) {
		start := time.Now()
		certKey, certOnly, _ := baresipSelfSigned(t, "cluster baresip", softphoneCluster)
		u := tlsBackendBaresip(t, certKey)
		tlsAddr := netip.MustParseAddrPort(u.TLSAddr())
		gw := tlsBackendGateway(t, int(tlsAddr.Port()), certOnly)

		res := runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.8", 0, fmt.Sprintf("127.0.0.1:%d", gw.port), 1,
			"-s", "5551000", "-d", "200")
		if res.ok != 1 || res.failed != 0 {
			t.Fatalf("trunk call over the TLS backend: ok=%d failed=%d\n%s", res.ok, res.failed, tail(res.out, 3000))
		}
		est := u.waitEvent(t, "CALL_ESTABLISHED", 5*time.Second)
		cl := u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
		if est.Direction != "incoming" || cl.ID != est.ID {
			t.Errorf("established %+v, closed %+v", est, cl)
		}
		// baresip's SIP trace names each message's socket pair: the INVITE (and the BYE) came in
		// on its TLS listener.
		for _, m := range []string{"INVITE", "BYE"} {
			flow := softphoneTraceFlow(u.Log(), m+" sip:5551000")
			if !strings.HasPrefix(flow, "TLS ") || !strings.HasSuffix(flow, "-> "+tlsAddr.String()) {
				t.Errorf("baresip received the %s over %q, want TLS to %s", m, flow, tlsAddr)
			}
		}
		// And the kernel shows the gateway's connection to baresip's TLS port.
		if conns := tlsBackendConns(t, tlsAddr); len(conns) == 0 {
			t.Errorf("no established TCP connection to baresip's TLS port %s", tlsAddr)
		} else {
			t.Logf("connections to %s: %v", tlsAddr, conns)
		}
		if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "503"); n != 0 {
			t.Errorf("INVITE 503s: %v, want none", n)
		}
		eventually(t, 2*time.Second, "dialog ended", func() bool { return gw.metric(t, "gateway_sip_dialogs_active") == 0 })
		t.Logf("call over TLS in %v; events %v", time.Since(start), u.eventTypes())
	})

	t.Run("unverified", func(t *testing.T) {
		certKey, _, _ := baresipSelfSigned(t, "cluster baresip", softphoneCluster)
		// Another self-signed CA, also naming 127.0.0.3: only the signature is wrong.
		_, otherCA, _ := baresipSelfSigned(t, "some other CA", softphoneCluster)
		u := tlsBackendBaresip(t, certKey)
		tlsAddr := netip.MustParseAddrPort(u.TLSAddr())
		gw := tlsBackendGateway(t, int(tlsAddr.Port()), otherCA)

		scen := templated(t, "uac-expect.xml", map[string]string{"EXPECT": "503", "MAXFWD": "70"})
		res := runSippFrom(t, scen, "127.0.0.8", 0, fmt.Sprintf("127.0.0.1:%d", gw.port), 1, "-s", "5551000")
		if res.ok != 1 || res.failed != 0 {
			t.Fatalf("trunk call to an unverifiable backend: ok=%d failed=%d, want a 503\n%s", res.ok, res.failed,
				tail(res.out, 3000))
		}
		if n := gw.metric(t, "gateway_sip_replies_total", "method", "INVITE", "code", "503"); n != 1 {
			t.Errorf("INVITE 503s: %v, want 1", n)
		}
		// The branch failed on the transport (the handshake), not on a timeout.
		if n := gw.metric(t, "gateway_sip_branch_failures_total", "reason", "transport"); n != 1 {
			t.Errorf("branch failures by transport: %v, want 1", n)
		}
		// ...and it failed because the certificate did not verify.
		if !strings.Contains(gw.logs.String(), "x509: certificate signed by unknown authority") {
			t.Errorf("the gateway log names no certificate verification failure")
		}
		time.Sleep(200 * time.Millisecond) // anything relayed would have arrived by now
		if strings.Contains(u.Log(), "INVITE sip:") {
			t.Errorf("baresip received an INVITE:\n%s", tail(u.Log(), 3000))
		}
		if evs := u.eventTypes(); len(evs) != 0 {
			t.Errorf("baresip events: %v, want none", evs)
		}
		if conns := tlsBackendConns(t, tlsAddr); len(conns) != 0 {
			t.Errorf("connections to baresip's TLS port left after the failed handshake: %v", conns)
		}
		// baresip saw the handshakes fail: the initial OPTIONS probe's and the INVITE's.
		if !strings.Contains(u.Log(), "tls: accept error") {
			t.Errorf("baresip logged no failed TLS accept:\n%s", tail(u.Log(), 2000))
		}
	})
}
