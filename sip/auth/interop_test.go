package auth

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// TestInteropDigestLibrary answers every value of our challenge with icholy/digest, the
// client implementation sipgo uses, for both algorithms and both header kinds.
func TestInteropDigestLibrary(t *testing.T) {
	f := newFixture(t, Config{})
	for _, m := range []string{"REGISTER", "INVITE"} {
		for i := range 2 {
			// A fresh challenge each time: the values share one nonce, and its nc sequence
			// belongs to whichever algorithm uses it first.
			value := f.a.Challenge(false, srcA)[i]
			chal, err := digest.ParseChallenge(value)
			if err != nil {
				t.Fatal(err)
			}
			if !digest.CanDigest(chal) {
				t.Fatalf("library refuses %q", value)
			}
			for count := 1; count <= 3; count++ {
				cred, err := digest.Digest(chal, digest.Options{
					Method: m, URI: "sip:1000@dualgate.example.com", Count: count,
					Username: "alice", Password: "s3cret",
				})
				if err != nil {
					t.Fatal(err)
				}
				res := f.a.Verify(m, []string{cred.String()}, srcA)
				if res.Status != OK || res.User != "alice" {
					t.Errorf("%s %s nc=%d: %v %q\n%s", m, chal.Algorithm, count, res.Status, res.Reason, cred)
				}
			}
			cred, _ := digest.Digest(chal, digest.Options{Method: m, URI: "sip:x", Username: "alice", Password: "nope"})
			if res := f.a.Verify(m, []string{cred.String()}, srcA); res.Status != Failed {
				t.Errorf("%s wrong password: %v", chal.Algorithm, res.Status)
			}
		}
	}
}

// TestInteropSipgoClient runs sipgo's own client retry (DoDigestAuth) against a sipgo
// server that uses the Authenticator, over loopback UDP: REGISTER gets 401 and
// WWW-Authenticate, OPTIONS gets 407 and Proxy-Authenticate. sipgo answers only the first
// challenge value, so each algorithm is tested as the first one offered.
func TestInteropSipgoClient(t *testing.T) {
	if testing.Short() {
		t.Skip("network")
	}
	for _, alg := range []string{"SHA-256", "MD5"} {
		t.Run(alg, func(t *testing.T) {
			a := New(Config{Realm: realm, Algorithms: []string{alg}}, alice)
			addr, stop := serveAuth(t, a)
			defer stop()

			ua, err := sipgo.NewUA()
			if err != nil {
				t.Fatal(err)
			}
			defer ua.Close()
			client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
			if err != nil {
				t.Fatal(err)
			}

			for _, tc := range []struct {
				method    gosip.RequestMethod
				challenge int
			}{{gosip.REGISTER, 401}, {gosip.OPTIONS, 407}} {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				req := gosip.NewRequest(tc.method, gosip.Uri{User: "alice", Host: addr.IP.String(), Port: addr.Port})
				res, err := client.Do(ctx, req)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				if res.StatusCode != tc.challenge {
					t.Fatalf("%s: first answer %d", tc.method, res.StatusCode)
				}
				res, err = client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: "s3cret"})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != 200 {
					t.Errorf("%s with credentials: %d %s", tc.method, res.StatusCode, res.Reason)
				}
			}
		})
	}
}

func serveAuth(t *testing.T, a *Authenticator) (*net.UDPAddr, func()) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no UDP on loopback:", err)
	}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	handle := func(header, challengeHeader string, code int) sipgo.RequestHandler {
		return func(req *gosip.Request, tx gosip.ServerTransaction) {
			var values []string
			for _, h := range req.GetHeaders(header) {
				values = append(values, h.Value())
			}
			src := netip.MustParseAddrPort(req.Source()).Addr()
			res := a.Verify(req.Method.String(), values, src)
			if res.Status == OK {
				_ = tx.Respond(gosip.NewResponseFromRequest(req, 200, "OK", nil))
				return
			}
			if res.Status != Missing {
				t.Errorf("%s: %v %q %q", req.Method, res.Status, res.Reason, values)
			}
			resp := gosip.NewResponseFromRequest(req, code, "Auth", nil)
			for _, v := range a.Challenge(res.Status == Stale, src) {
				resp.AppendHeader(gosip.NewHeader(challengeHeader, v))
			}
			_ = tx.Respond(resp)
		}
	}
	srv.OnRegister(handle("Authorization", "WWW-Authenticate", 401))
	srv.OnOptions(handle("Proxy-Authorization", "Proxy-Authenticate", 407))
	go func() { _ = srv.ServeUDP(conn) }()
	return conn.LocalAddr().(*net.UDPAddr), func() {
		_ = ua.Close()
		_ = conn.Close()
	}
}
