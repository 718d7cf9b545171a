package test

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dualgate/dualgate/gateway"
)

// The SIP edge: registrar with digest auth, calls to registered phones behind NAT, source
// policy, flood protection and topology hiding. The addresses stand for the roles:
//
//	127.0.0.1   the gateway
//	127.0.0.3   the cluster (a dispatcher destination, so trusted by address)
//	127.0.0.5   a phone behind NAT (its Contact names 192.168.1.50, which nobody can reach)
//	127.0.0.8   a trunk (sip.trunks)
//	127.0.0.9+  strangers

const demoPassword = "dualgate-demo"

func demoUsers(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../configs/users.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// edgeConfig: UDP and TCP on 127.0.0.1, one backend at 127.0.0.3:backend in set 1, the demo
// users, a trunk at 127.0.0.8, and extra YAML lines appended to the sip section.
func edgeConfig(t *testing.T, backend int, sipExtra string) string {
	return fmt.Sprintf(`
log: {level: debug}
users_file: %q
sip:
  listen: ["udp:127.0.0.1:%%PORT%%", "tcp:127.0.0.1:%%PORT%%"]
  timers: {response: 500ms, invite_final: 10s}
  routes: [{name: numbers, methods: [INVITE], set: 1, algorithm: 4}]
  trunks: [{name: carrier, sources: ["127.0.0.8"], set: 1, algorithm: 4}]
  registrar: {min_expires: 1s, keepalive: 0s}
%s
http: {listen: "127.0.0.1:0", jwt: {ephemeral_secret: true}}
dispatcher:
  destinations:
    - {set: 1, uri: "sip:127.0.0.3:%d"}
  probe: {interval: 60s, timeout: 1s, threshold: 3, recover: 1}
`, demoUsers(t), sipExtra, backend)
}

// register runs a sipp phone registering as user from ip:port.
func register(t *testing.T, gwPort int, ip string, port int, user, password, expect string, expires int) uacResult {
	t.Helper()
	scen := templated(t, "uac-register.xml", map[string]string{"USER": user, "PASSWORD": password, "EXPECT": expect,
		"CONTACT": "192.168.1.50:5060", "EXPIRES": strconv.Itoa(expires)})
	return runSippFrom(t, scen, ip, port, fmt.Sprintf("127.0.0.1:%d", gwPort), 1, "-s", user)
}

// runSippFrom runs a bounded sipp UAC from ip:port (port 0: any free port).
func runSippFrom(t *testing.T, scen, ip string, port int, target string, calls int, extra ...string) uacResult {
	t.Helper()
	if port == 0 {
		port = freePort(t)
	}
	dir := t.TempDir()
	args := append([]string{"-sf", scen, "-i", ip, "-p", strconv.Itoa(port), "-nostdin", "-m", strconv.Itoa(calls),
		"-r", "10", "-timeout", "15", "-timeout_error", "-trace_stat", "-stf", filepath.Join(dir, "stat.csv"),
		"-trace_err", "-error_file", filepath.Join(dir, "err.log"), "-trace_msg", "-message_file", filepath.Join(dir, "msg.log")}, extra...)
	args = append(args, target)
	res := sippRun(t, dir, args)
	res.msgLog = filepath.Join(dir, "msg.log")
	return res
}

func metric(t *testing.T, gw *gateway.Gateway, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := gw.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		total := 0.0
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
		return total
	}
	return 0
}

func TestRegisterWithDigest(t *testing.T) {
	requireSipp(t)
	gwPort, backend := freePort(t), freePort(t)
	gw := startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {algorithms: [MD5]}\n  guard: {auth_failures: 3}"))

	// sipp answers MD5 challenges (it has no SHA-256): 401, then 200.
	if res := register(t, gwPort, "127.0.0.5", 0, "1001", demoPassword, "200", 600); res.ok != 1 {
		t.Fatalf("REGISTER with the right password did not get 200\n%s", tail(res.out, 3000))
	}
	if n := metric(t, gw, "gateway_sip_registrations"); n != 1 {
		t.Fatalf("location store holds %v bindings, want 1", n)
	}
	// Registering as someone else with one's own credentials is refused... and a wrong
	// password gets a fresh challenge each time until the source is banned.
	for i := 0; i < 3; i++ {
		if res := register(t, gwPort, "127.0.0.9", 0, "1002", "wrong-password", "401", 600); res.ok != 1 {
			t.Fatalf("wrong password %d: want a new 401\n%s", i+1, tail(res.out, 3000))
		}
	}
	if n := metric(t, gw, "gateway_sip_guard_bans_total", "reason", "auth"); n != 1 {
		t.Fatalf("after 3 failures from one source: %v auth bans, want 1", n)
	}
	// Banned: no answer at all, even with the right password.
	c := dialUDP(t, "127.0.0.9", gwPort)
	if got := c.exchange(t, c.register("1002", "", 600), 700*time.Millisecond); got != nil {
		t.Fatalf("a banned source got an answer: %s", firstLine(got))
	}
	// Another source is unaffected.
	if res := register(t, gwPort, "127.0.0.6", 0, "1002", demoPassword, "200", 600); res.ok != 1 {
		t.Fatalf("REGISTER from another source after the ban did not get 200\n%s", tail(res.out, 3000))
	}

	// The admin API shows the registrations (with their real sources) and the ban, and
	// lifting the ban lets the source in again.
	token := adminToken(t, gw)
	if code, body := adminCall(t, gw, "GET", "/api/admin/registrations", token, ""); code != 200 ||
		!strings.Contains(body, `"source":"127.0.0.5:`) || !strings.Contains(body, `"user":"1002"`) {
		t.Fatalf("registrations: %d %s", code, body)
	}
	if code, body := adminCall(t, gw, "GET", "/api/admin/bans", token, ""); code != 200 ||
		!strings.Contains(body, `"prefix":"127.0.0.9/32"`) || !strings.Contains(body, `"reason":"auth"`) {
		t.Fatalf("bans: %d %s", code, body)
	}
	if code, body := adminCall(t, gw, "POST", "/api/admin/bans/lift", token, `{"address":"127.0.0.9"}`); code != 200 {
		t.Fatalf("lift: %d %s", code, body)
	}
	if got := c.exchange(t, c.register("1002", "", 600), time.Second); code(got) != 401 {
		t.Fatalf("after the lift: want a challenge, got %q", firstLine(got))
	}
}

// TestAuthSpoofedFailuresNotCounted: over UDP a source address can be forged, so digest
// failures count toward bans only on a nonce the gateway sent to that source. A "spoofer"
// sends REGISTERs for 1001 with wrong passwords from the phone's address, many times the
// per-source (3) and per-user (10) thresholds, on nonces it never received there: one a
// challenge gave another address, and made-up ones. Nothing is banned, 1001's per-user count
// stays cold, and the phone still registers. Wrong passwords on real challenges still ban.
func TestAuthSpoofedFailuresNotCounted(t *testing.T) {
	gwPort, backend := freePort(t), freePort(t)
	gw := startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {algorithms: [MD5]}\n  guard: {auth_failures: 3}"))

	nonceOf := func(t *testing.T, p *udpPeer, user string) string {
		t.Helper()
		ch := p.exchange(t, p.register(user, "", 600), time.Second)
		if code(ch) != 401 {
			t.Fatalf("want a 401 challenge, got %q", firstLine(ch))
		}
		n := param(headerValues(ch, "WWW-Authenticate")[0], "nonce")
		if n == "" {
			t.Fatalf("no nonce in %q", headerValues(ch, "WWW-Authenticate"))
		}
		return n
	}
	// The attacker's own address gets a genuine nonce...
	attacker := dialUDP(t, "127.0.0.12", gwPort)
	stolen := nonceOf(t, attacker, "1001")
	// ...and the spoofer sends as the phone's address, 127.0.0.5. On loopback the answers do
	// come back to this socket; a real spoofer never sees them, so they are not used.
	spoofer := dialUDP(t, "127.0.0.5", gwPort)
	const spoofed = 40
	for i := 0; i < spoofed; i++ {
		nonce := stolen
		if i%2 == 1 {
			raw := make([]byte, 32)
			_, _ = rand.Read(raw)
			nonce = base64.RawURLEncoding.EncodeToString(raw) // the length and alphabet of ours
		}
		got := spoofer.exchange(t, spoofer.register("1001", digestMD5("1001", "wrong-password", nonce, "REGISTER", spoofer.ruri(), 1), 600), time.Second)
		if code(got) != 401 || len(headerValues(got, "WWW-Authenticate")) == 0 {
			t.Fatalf("spoofed answer %d: want a fresh 401 challenge, got %q", i+1, firstLine(got))
		}
		if strings.Contains(string(got), "nonce not issued") {
			t.Fatalf("the reason leaked to the client:\n%s", got)
		}
	}
	if n := metric(t, gw, "gateway_sip_auth_total", "result", "unproven"); n != spoofed {
		t.Fatalf("unproven answers: %v, want %d", n, spoofed)
	}
	if n := metric(t, gw, "gateway_sip_auth_total", "result", "failed"); n != 0 {
		t.Fatalf("spoofed answers counted as failed: %v", n)
	}
	if n := metric(t, gw, "gateway_sip_guard_auth_failures_total"); n != 0 {
		t.Fatalf("the guard was told of %v failures", n)
	}
	if n := metric(t, gw, "gateway_sip_guard_bans_total"); n != 0 {
		t.Fatalf("%v bans after spoofed answers, want none", n)
	}

	// 1001's per-user count is cold: past 10 failures, a source failing for 1001 would be
	// banned at its first failure. One real failure (on its own challenge) from 127.0.0.13
	// is counted and bans nothing.
	other := dialUDP(t, "127.0.0.13", gwPort)
	n := nonceOf(t, other, "1001")
	if got := other.exchange(t, other.register("1001", digestMD5("1001", "wrong-password", n, "REGISTER", other.ruri(), 1), 600), time.Second); code(got) != 401 {
		t.Fatalf("one real failure: want 401, got %q", firstLine(got))
	}
	if n := metric(t, gw, "gateway_sip_auth_total", "result", "failed"); n != 1 {
		t.Fatalf("failed: %v, want 1", n)
	}
	if n := metric(t, gw, "gateway_sip_guard_bans_total"); n != 0 {
		t.Fatalf("a first real failure for 1001 got %v bans: the per-user count was heated by spoofed answers", n)
	}

	// The phone itself, at the spoofed address, registers as usual.
	phone := dialUDP(t, "127.0.0.5", gwPort)
	n = nonceOf(t, phone, "1001")
	if got := phone.exchange(t, phone.register("1001", digestMD5("1001", demoPassword, n, "REGISTER", phone.ruri(), 1), 600), time.Second); code(got) != 200 {
		t.Fatalf("the phone after the spoofing: want 200, got %q", firstLine(got))
	}

	// Wrong passwords on challenges a source really received still end in its ban.
	guesser := dialUDP(t, "127.0.0.9", gwPort)
	for i := 0; i < 3; i++ {
		n := nonceOf(t, guesser, "1001")
		if got := guesser.exchange(t, guesser.register("1001", digestMD5("1001", "guess", n, "REGISTER", guesser.ruri(), 1), 600), time.Second); code(got) != 401 {
			t.Fatalf("guess %d: want 401, got %q", i+1, firstLine(got))
		}
	}
	if n := metric(t, gw, "gateway_sip_guard_bans_total", "reason", "auth"); n != 1 {
		t.Fatalf("after 3 real failures from one source: %v auth bans, want 1", n)
	}
	if got := guesser.exchange(t, guesser.register("1001", "", 600), 700*time.Millisecond); got != nil {
		t.Fatalf("a banned source got an answer: %s", firstLine(got))
	}
	// The phone's address is not the one banned.
	if got := phone.exchange(t, phone.register("1001", "", 600), time.Second); code(got) != 401 {
		t.Fatalf("the phone after the guesser's ban: want 401, got %q", firstLine(got))
	}
}

func adminCall(t *testing.T, gw *gateway.Gateway, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+gw.HTTPAddr()+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func adminToken(t *testing.T, gw *gateway.Gateway) string {
	t.Helper()
	code, body := adminCall(t, gw, "POST", "/api/login", "", `{"username":"admin","password":"`+demoPassword+`"}`)
	var s struct{ Token string }
	if err := json.Unmarshal([]byte(body), &s); err != nil || code != 200 || s.Token == "" {
		t.Fatalf("admin login: %d %s", code, body)
	}
	return s.Token
}

func TestDigestReplayStaleAndSHA256(t *testing.T) {
	gwPort, backend := freePort(t), freePort(t)
	startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {nonce_ttl: 1s, algorithms: [SHA-256, MD5]}"))
	c := dialUDP(t, "127.0.0.5", gwPort)

	// SHA-256 first (RFC 8760: strongest first), then MD5, both with qop=auth.
	ch := c.exchange(t, c.register("1001", "", 600), time.Second)
	if code(ch) != 401 {
		t.Fatalf("want 401, got %s", firstLine(ch))
	}
	chals := headerValues(ch, "WWW-Authenticate")
	if len(chals) != 2 || !strings.Contains(chals[0], "algorithm=SHA-256") || !strings.Contains(chals[1], "algorithm=MD5") ||
		!strings.Contains(chals[0], `qop="auth"`) {
		t.Fatalf("challenges: %q", chals)
	}
	nonce := param(chals[0], "nonce")
	auth := digestSHA256("1001", demoPassword, nonce, "REGISTER", c.ruri(), 1)
	if got := c.exchange(t, c.register("1001", auth, 600), time.Second); code(got) != 200 {
		t.Fatalf("SHA-256 answer: want 200, got %s", firstLine(got))
	}
	// The same answer again, in a new transaction: a replayed nonce-count.
	if got := c.exchange(t, c.register("1001", auth, 600), time.Second); code(got) != 401 {
		t.Fatalf("replayed nonce-count: want 401, got %s", firstLine(got))
	}
	// The next nonce-count on the same nonce is fine.
	if got := c.exchange(t, c.register("1001", digestSHA256("1001", demoPassword, nonce, "REGISTER", c.ruri(), 2), 600), time.Second); code(got) != 200 {
		t.Fatalf("nc=2: want 200, got %s", firstLine(got))
	}
	// After nonce_ttl a right answer gets a fresh challenge marked stale.
	time.Sleep(1100 * time.Millisecond)
	got := c.exchange(t, c.register("1001", digestSHA256("1001", demoPassword, nonce, "REGISTER", c.ruri(), 3), 600), time.Second)
	if code(got) != 401 || !strings.Contains(strings.Join(headerValues(got, "WWW-Authenticate"), " "), "stale=true") {
		t.Fatalf("expired nonce: want 401 with stale=true, got\n%s", got)
	}
	// MD5 against the MD5 challenge works as well.
	ch = c.exchange(t, c.register("1001", "", 600), time.Second)
	md := headerValues(ch, "WWW-Authenticate")[1]
	if got := c.exchange(t, c.register("1001", digestMD5("1001", demoPassword, param(md, "nonce"), "REGISTER", c.ruri(), 1), 600), time.Second); code(got) != 200 {
		t.Fatalf("MD5 answer: want 200, got %s", firstLine(got))
	}
	// Registering another user's AOR with one's own valid credentials: 403.
	ch = c.exchange(t, c.register("1002", "", 600), time.Second)
	n := param(headerValues(ch, "WWW-Authenticate")[0], "nonce")
	req := c.register("1002", digestSHA256("1001", demoPassword, n, "REGISTER", c.ruri(), 1), 600)
	if got := c.exchange(t, req, time.Second); code(got) != 403 {
		t.Fatalf("REGISTER for 1002 with 1001's credentials: want 403, got %s", firstLine(got))
	}
	// From a trusted address (here the cluster's) a REGISTER needs no digest, but only a user
	// registers.
	tr := dialUDP(t, "127.0.0.3", gwPort)
	if got := tr.exchange(t, tr.register("1002", "", 600), time.Second); code(got) != 200 {
		t.Fatalf("trusted REGISTER: want 200 without a challenge, got %q", firstLine(got))
	}
	if got := tr.exchange(t, tr.register("4711", "", 600), time.Second); code(got) != 404 {
		t.Fatalf("trusted REGISTER for nobody: want 404, got %q", firstLine(got))
	}
	// Expires 0 removes the binding: 200 without a Contact. (423 below min_expires is covered
	// by the registrar's unit tests: this config's minimum is 1 s.)
	ch = c.exchange(t, c.register("1001", "", 0), time.Second)
	n = param(headerValues(ch, "WWW-Authenticate")[0], "nonce")
	if got := c.exchange(t, c.register("1001", digestSHA256("1001", demoPassword, n, "REGISTER", c.ruri(), 1), 0), time.Second); code(got) != 200 ||
		len(headerValues(got, "Contact")) != 0 {
		t.Fatalf("unregister: want 200 without Contact, got\n%s", got)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestCallsToRegisteredPhone: a phone behind NAT registers from one port with a Contact naming
// a private address; calls from the cluster reach it at its real source, BYE works both ways,
// an unregistered user gets 480, an unknown one 404, and bindings expire on time.
func TestCallsToRegisteredPhone(t *testing.T) {
	requireSipp(t)
	gwPort, backend, phonePort := freePort(t), freePort(t), freePort(t)
	gw := startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {algorithms: [MD5]}"))
	target := fmt.Sprintf("127.0.0.1:%d", gwPort)

	if res := register(t, gwPort, "127.0.0.5", phonePort, "1001", demoPassword, "200", 600); res.ok != 1 {
		t.Fatalf("phone registration failed\n%s", tail(res.out, 3000))
	}
	vals := map[string]string{"CONTACT": "192.168.1.50:5060"}

	// Call 1: the cluster hangs up.
	phone := startUASAt(t, "127.0.0.5", templated(t, "uas-phone.xml", vals), phonePort, "-s", "1001", "-m", "1")
	if res := runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.3", 0, target, 1, "-s", "1001", "-d", "100"); res.ok != 1 {
		t.Fatalf("cluster to phone, cluster hangs up: failed\n%s", tail(res.out, 3000))
	}
	phone.stop()
	if reqs := phone.received(t); count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
		t.Fatalf("phone received %v, want INVITE, ACK, BYE", reqs)
	}

	// Call 2: the phone hangs up; its BYE goes to the Contact the cluster gave (through us).
	phone = startUASAt(t, "127.0.0.5", templated(t, "uas-phone-bye.xml", vals), phonePort, "-s", "1001", "-m", "1")
	if res := runSippFrom(t, scenario("uac-recv-bye.xml"), "127.0.0.3", 0, target, 1, "-s", "1001"); res.ok != 1 {
		t.Fatalf("cluster to phone, phone hangs up: failed\n%s", tail(res.out, 3000))
	}
	phone.stop()
	assertNoCalls(t, gw)

	// 1002 exists but has no binding: 480. 4711 is nobody: 404.
	for _, tc := range []struct{ user, want string }{{"1002", "480"}, {"4711", "404"}} {
		scen := templated(t, "uac-expect.xml", map[string]string{"EXPECT": tc.want, "MAXFWD": "70"})
		if res := runSippFrom(t, scen, "127.0.0.3", 0, target, 1, "-s", tc.user); res.ok != 1 {
			t.Fatalf("call to %s: want %s\n%s", tc.user, tc.want, tail(res.out, 3000))
		}
	}

	// A binding registered for 2 s is gone after that, without anything else happening.
	if res := register(t, gwPort, "127.0.0.6", 0, "1002", demoPassword, "200", 2); res.ok != 1 {
		t.Fatalf("short registration failed\n%s", tail(res.out, 3000))
	}
	if n := metric(t, gw, "gateway_sip_registrations"); n != 2 {
		t.Fatalf("%v bindings, want 2", n)
	}
	eventually(t, 5*time.Second, "the 2 s binding expires", func() bool { return metric(t, gw, "gateway_sip_registrations") == 1 })
}

// TestSourcePolicy: strangers must authenticate and never reach a backend without; a trunk
// is trusted by address; scanners get nothing; a flood is limited and banned while others
// keep calling.
func TestSourcePolicy(t *testing.T) {
	requireSipp(t)
	gwPort, backend := freePort(t), freePort(t)
	gw := startGateway(t, gwPort, edgeConfig(t, backend, "  guard: {rate: 20, burst: 20}"))
	uas := startUASAt(t, "127.0.0.3", scenario("uas-rr.xml"), backend)
	target := fmt.Sprintf("127.0.0.1:%d", gwPort)

	scen := templated(t, "uac-expect.xml", map[string]string{"EXPECT": "407", "MAXFWD": "70"})
	if res := runSippFrom(t, scen, "127.0.0.9", 0, target, 3, "-s", "5551000"); res.ok != 3 {
		t.Fatalf("stranger without credentials: want 407\n%s", tail(res.out, 3000))
	}
	if res := runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.8", 0, target, 3, "-s", "5551000", "-d", "50"); res.ok != 3 {
		t.Fatalf("trunk calls failed\n%s", tail(res.out, 3000))
	}
	time.Sleep(200 * time.Millisecond)
	if reqs := uas.received(t); count(reqs, "INVITE") != 3 {
		t.Fatalf("backend received %d INVITEs, want only the trunk's 3: %v", count(reqs, "INVITE"), reqs)
	}

	// A scanner gets no answer; the same request without its User-Agent does.
	sc := dialUDP(t, "127.0.0.10", gwPort)
	if got := sc.exchange(t, sc.options("friendly-scanner"), 700*time.Millisecond); got != nil {
		t.Fatalf("scanner got an answer: %s", firstLine(got))
	}
	if got := sc.exchange(t, sc.options("Yealink SIP-T46U"), time.Second); code(got) != 200 {
		t.Fatalf("OPTIONS from a phone: want 200, got %q", firstLine(got))
	}

	// A flood from 127.0.0.11 (bounded: 1500 requests over about 3 s) is limited and then
	// banned, while the trunk's calls keep going through.
	fl := dialUDP(t, "127.0.0.11", gwPort)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 1500; i++ {
			_, _ = fl.conn.Write(fl.options("flood"))
			time.Sleep(2 * time.Millisecond)
		}
	})
	res := runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.8", 0, target, 10, "-s", "5551000", "-d", "50")
	wg.Wait()
	if res.ok != 10 {
		t.Fatalf("trunk calls during the flood: %d of 10\n%s", res.ok, tail(res.out, 3000))
	}
	if n := metric(t, gw, "gateway_sip_guard_bans_total", "reason", "flood"); n != 1 {
		t.Fatalf("flood bans: %v, want 1", n)
	}
	if n := metric(t, gw, "gateway_sip_guard_dropped_total", "reason", "rate"); n < 100 {
		t.Fatalf("only %v flood requests were dropped", n)
	}
}

// TestTopologyHiding captures every byte the phone receives during a call from the cluster
// and one to the cluster, and finds no cluster address in any header.
func TestTopologyHiding(t *testing.T) {
	requireSipp(t)
	gwPort, backend, phonePort := freePort(t), freePort(t), freePort(t)
	startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {algorithms: [MD5]}"))
	target := fmt.Sprintf("127.0.0.1:%d", gwPort)
	if res := register(t, gwPort, "127.0.0.5", phonePort, "1001", demoPassword, "200", 600); res.ok != 1 {
		t.Fatalf("phone registration failed\n%s", tail(res.out, 3000))
	}
	// FreeSWITCH's Call-IDs are UUIDs; sipp's default names its address, so the cluster's
	// sipp uses one without.
	phone := startUASAt(t, "127.0.0.5", templated(t, "uas-phone-bye.xml", map[string]string{"CONTACT": "192.168.1.50:5060"}),
		phonePort, "-s", "1001", "-m", "1")
	if res := runSippFrom(t, scenario("uac-recv-bye.xml"), "127.0.0.3", 0, target, 1, "-s", "1001", "-cid_str", "%u-%p-topo"); res.ok != 1 {
		t.Fatalf("cluster to phone failed\n%s", tail(res.out, 3000))
	}
	phone.stop()
	data, err := os.ReadFile(phone.msgLog)
	if err != nil {
		t.Fatal(err)
	}
	received := receivedHeaders(string(data))

	// And the other way: the phone calls a number the cluster answers; its ACK and BYE go to
	// the sealed Contact it was given and still reach the backend.
	uas := startUASAt(t, "127.0.0.3", scenario("uas-rr.xml"), backend)
	scen := templated(t, "uac-auth-invite.xml", map[string]string{"USER": "1001", "PASSWORD": demoPassword})
	res := runSippFrom(t, scen, "127.0.0.5", phonePort, target, 1, "-s", "5551000", "-d", "100")
	if res.ok != 1 {
		t.Fatalf("phone to cluster failed\n%s", tail(res.out, 3000))
	}
	uas.stop()
	if reqs := uas.received(t); count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
		t.Fatalf("backend received %v, want INVITE, ACK, BYE", reqs)
	}
	out, err := os.ReadFile(res.msgLog)
	if err != nil {
		t.Fatal(err)
	}
	received = append(received, receivedHeaders(string(out))...)
	if len(received) < 3 {
		t.Fatalf("phone received only %d messages", len(received))
	}
	for _, want := range []string{"INVITE sip:1001@", "Via: ", "Contact: ", "SIP/2.0 200"} {
		if !strings.Contains(strings.Join(received, "\n"), want) {
			t.Fatalf("the capture lacks %q: %q", want, received)
		}
	}
	for _, m := range received {
		if strings.Contains(m, "127.0.0.3") {
			t.Errorf("a cluster address reached the phone:\n%s", m)
		}
	}
}

// receivedHeaders returns the header sections (no bodies: SDP names the media address by
// design) of the messages in a sipp message log that the sipp side received.
func receivedHeaders(log string) []string {
	var out []string
	for _, block := range strings.Split(log, "----------------------------------------------- ") {
		if !strings.Contains(block, "message received") {
			continue
		}
		// "<time>\nUDP message received [N] bytes :\n\n<message>"
		_, msg, ok := strings.Cut(block, "bytes :\n\n")
		if !ok {
			continue
		}
		msg = strings.ReplaceAll(msg, "\r\n", "\n")
		head, _, _ := strings.Cut(msg, "\n\n")
		out = append(out, head)
	}
	return out
}

// udpPeer is a hand-made SIP client for what sipp cannot do: replay an Authorization, answer
// a SHA-256 challenge, send as a scanner.
type udpPeer struct {
	conn   *net.UDPConn
	gw     int
	seq    int
	callID string
}

func dialUDP(t *testing.T, ip string, gwPort int) *udpPeer {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: gwPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPeer{conn: c, gw: gwPort, callID: fmt.Sprintf("peer-%d-%s", time.Now().UnixNano(), ip)}
}

func (p *udpPeer) ruri() string { return fmt.Sprintf("sip:127.0.0.1:%d", p.gw) }

func (p *udpPeer) register(user, authorization string, expires int) []byte {
	p.seq++
	la := p.conn.LocalAddr().(*net.UDPAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER %s SIP/2.0\r\n", p.ruri())
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-peer%d%d;rport\r\n", la, time.Now().UnixNano(), p.seq)
	fmt.Fprintf(&b, "From: <sip:%s@127.0.0.1>;tag=peer%d\r\nTo: <sip:%s@127.0.0.1>\r\n", user, p.seq, user)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\nMax-Forwards: 70\r\n", p.callID, p.seq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\nExpires: %d\r\n", user, la, expires)
	if authorization != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", authorization)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

func (p *udpPeer) options(userAgent string) []byte {
	p.seq++
	la := p.conn.LocalAddr().(*net.UDPAddr)
	return []byte(fmt.Sprintf("OPTIONS %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-opt%d%d\r\n"+
		"From: <sip:probe@%s>;tag=o%d\r\nTo: <%s>\r\nCall-ID: opt-%d-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"+
		"User-Agent: %s\r\nContent-Length: 0\r\n\r\n", p.ruri(), la, time.Now().UnixNano(), p.seq, la.IP, p.seq, p.ruri(),
		time.Now().UnixNano(), p.seq, userAgent))
}

// exchange sends a request and returns the first final response, or nil if none came in time.
func (p *udpPeer) exchange(t *testing.T, req []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := p.conn.Write(req); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, err := p.conn.Read(buf)
		if err != nil {
			return nil
		}
		if c := code(buf[:n]); c >= 200 {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

func code(msg []byte) int {
	m := statusLine.FindSubmatch(msg)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func firstLine(msg []byte) string {
	s, _, _ := strings.Cut(string(msg), "\r\n")
	return s
}

func headerValues(msg []byte, name string) []string {
	var out []string
	for _, l := range strings.Split(string(msg), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

func param(challenge, name string) string {
	m := regexp.MustCompile(name + `="?([^",]+)"?`).FindStringSubmatch(challenge)
	if m == nil {
		return ""
	}
	return m[1]
}

// digestMD5 and digestSHA256 compute RFC 2617/7616 qop=auth answers independently of the
// gateway's code, from the password.
func digestMD5(user, password, nonce, method, uri string, nc int) string {
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	return digestAnswer(h, "MD5", user, password, nonce, method, uri, nc)
}

func digestSHA256(user, password, nonce, method, uri string, nc int) string {
	return digestAnswer(sha256Hex, "SHA-256", user, password, nonce, method, uri, nc)
}

func digestAnswer(h func(string) string, alg, user, password, nonce, method, uri string, nc int) string {
	cnonce := "c0ffee"
	ncs := fmt.Sprintf("%08x", nc)
	ha1 := h(user + ":dualgate:" + password)
	ha2 := h(method + ":" + uri)
	resp := h(strings.Join([]string{ha1, nonce, ncs, cnonce, "auth", ha2}, ":"))
	return fmt.Sprintf(`Digest username="%s", realm="dualgate", nonce="%s", uri="%s", response="%s", algorithm=%s, qop=auth, nc=%s, cnonce="%s"`,
		user, nonce, uri, resp, alg, ncs, cnonce)
}

// TestForkToEveryBinding: a user registered from two phones; a call rings both, the first to
// answer gets it and the other is cancelled.
func TestForkToEveryBinding(t *testing.T) {
	requireSipp(t)
	gwPort, backend, pa, pb := freePort(t), freePort(t), freePort(t), freePort(t)
	startGateway(t, gwPort, edgeConfig(t, backend, "  auth: {algorithms: [MD5]}"))
	for _, ph := range []struct {
		ip      string
		port    int
		contact string
	}{{"127.0.0.5", pa, "192.168.1.50:5060"}, {"127.0.0.6", pb, "192.168.1.51:5060"}} {
		scen := templated(t, "uac-register.xml", map[string]string{"USER": "1001", "PASSWORD": demoPassword, "EXPECT": "200",
			"CONTACT": ph.contact, "EXPIRES": "600"})
		if res := runSippFrom(t, scen, ph.ip, ph.port, fmt.Sprintf("127.0.0.1:%d", gwPort), 1, "-s", "1001"); res.ok != 1 {
			t.Fatalf("registration from %s failed\n%s", ph.ip, tail(res.out, 3000))
		}
	}
	answers := startUASAt(t, "127.0.0.5", templated(t, "uas-phone.xml", map[string]string{"CONTACT": "192.168.1.50:5060"}), pa, "-s", "1001", "-m", "1")
	rings := startUASAt(t, "127.0.0.6", scenario("uas-ring-cancel.xml"), pb, "-m", "1")
	if res := runSippFrom(t, scenario("uac-invite.xml"), "127.0.0.3", 0, fmt.Sprintf("127.0.0.1:%d", gwPort), 1, "-s", "1001", "-d", "200"); res.ok != 1 {
		t.Fatalf("forked call failed\n%s", tail(res.out, 3000))
	}
	answers.stop()
	rings.stop()
	if reqs := answers.received(t); count(reqs, "INVITE") != 1 || count(reqs, "BYE") != 1 {
		t.Errorf("answering phone received %v, want INVITE, ACK, BYE", reqs)
	}
	if reqs := rings.received(t); count(reqs, "INVITE") != 1 || count(reqs, "CANCEL") != 1 || count(reqs, "BYE") != 0 {
		t.Errorf("ringing phone received %v, want INVITE and CANCEL", reqs)
	}
}

// TestNATKeepalive: a binding registered over UDP gets OPTIONS pings at its source.
func TestNATKeepalive(t *testing.T) {
	gwPort, backend := freePort(t), freePort(t)
	startGateway(t, gwPort, strings.Replace(edgeConfig(t, backend, "  auth: {algorithms: [SHA-256]}"), "keepalive: 0s", "keepalive: 200ms", 1))
	c := dialUDP(t, "127.0.0.7", gwPort)
	ch := c.exchange(t, c.register("1002", "", 600), time.Second)
	n := param(headerValues(ch, "WWW-Authenticate")[0], "nonce")
	if got := c.exchange(t, c.register("1002", digestSHA256("1002", demoPassword, n, "REGISTER", c.ruri(), 1), 600), time.Second); code(got) != 200 {
		t.Fatalf("register: %s", firstLine(got))
	}
	buf := make([]byte, 65535)
	_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	pings := 0
	for pings < 2 {
		n, err := c.conn.Read(buf)
		if err != nil {
			t.Fatalf("%d keepalives in 2 s, want at least 2 (every 200 ms): %v", pings, err)
		}
		if strings.HasPrefix(string(buf[:n]), "OPTIONS ") {
			pings++
		}
	}
}
