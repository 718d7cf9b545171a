package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dualgate/dualgate/gateway"
	"github.com/dualgate/dualgate/sip/dispatcher"
)

// gwConfig is a gateway config with the given backends in set 1 and algorithm.
func gwConfig(alg int, backends string, extra string) string {
	return fmt.Sprintf(`
log: {level: debug}
sip:
  listen: ["udp:127.0.0.1:%%PORT%%", "tcp:127.0.0.1:%%PORT%%"]
  timers: {response: 500ms, invite_final: 10s}
  routes: [{name: t, methods: [INVITE], set: 1, algorithm: %d}]
%s
http: {listen: "127.0.0.1:0", jwt: {ephemeral_secret: true}}
dispatcher:
  destinations:
%s
  probe: {interval: 60s, timeout: 1s, threshold: 3, recover: 1}
`, alg, extra, backends)
}

func dest(port int, attrs string) string {
	return fmt.Sprintf("    - {set: 1, uri: \"sip:127.0.0.1:%d\"%s}\n", port, attrs)
}

func TestDistribution(t *testing.T) {
	requireSipp(t)
	cases := []struct {
		name    string
		alg     int
		weights []string
		calls   int
		check   func(t *testing.T, per []int, order []int)
	}{
		{"round-robin alternates", 4, []string{"", "", ""}, 30, func(t *testing.T, per, order []int) {
			for i, n := range per {
				if n != 10 {
					t.Errorf("backend %d got %d calls, want 10 (%v)", i, n, per)
				}
			}
		}},
		{"From hash keeps one caller on one backend", 1, []string{"", ""}, 20, func(t *testing.T, per, _ []int) {
			if !(per[0] == 20 && per[1] == 0 || per[0] == 0 && per[1] == 20) {
				t.Errorf("calls from one From URI split over backends: %v", per)
			}
		}},
		{"Call-ID hash spreads different calls", 0, []string{"", ""}, 40, func(t *testing.T, per, _ []int) {
			if per[0] == 0 || per[1] == 0 {
				t.Errorf("40 distinct Call-IDs all hashed to one backend: %v", per)
			}
		}},
		{"weight 3:1", 9, []string{", weight: 3", ", weight: 1"}, 40, func(t *testing.T, per, _ []int) {
			if per[0] != 30 || per[1] != 10 {
				t.Errorf("weight 3:1 split %v, want [30 10]", per)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gwPort := freePort(t)
			var backends string
			var uas []*sippProc
			for _, w := range tc.weights {
				p := freePort(t)
				uas = append(uas, startUAS(t, "uas-rr.xml", p))
				backends += dest(p, w)
			}
			gw := startGateway(t, gwPort, gwConfig(tc.alg, backends, ""))
			res := runUAC(t, scenario("uac-invite.xml"), gwPort, tc.calls, 20)
			if res.ok != tc.calls || res.failed != 0 {
				t.Fatalf("calls: %d ok, %d failed, want %d ok\n%s", res.ok, res.failed, tc.calls, tail(res.out, 2000))
			}
			assertNoCalls(t, gw)
			per := make([]int, len(uas))
			for i, u := range uas {
				u.stop()
				reqs := u.received(t)
				per[i] = count(reqs, "INVITE")
				// Every call a backend took must have its ACK and BYE delivered to it.
				for _, r := range reqs {
					if cid, ok := strings.CutPrefix(r, "INVITE "); ok {
						for _, m := range []string{"ACK ", "BYE "} {
							if !contains(reqs, m+cid) {
								t.Errorf("backend %d took call %s but never got its %s", i, cid, m)
							}
						}
					}
				}
			}
			tc.check(t, per, nil)
		})
	}
}

// assertNoCalls checks the gateway's call bookkeeping once every call has ended: no tracked
// dialog is left and no destination still counts a call (call-load routing relies on both).
func assertNoCalls(t *testing.T, gw *gateway.Gateway) {
	t.Helper()
	eventually(t, 3*time.Second, "all calls ended in the gateway's bookkeeping", func() bool {
		if len(gw.Router().Dialogs()) != 0 {
			return false
		}
		for _, set := range gw.Dispatcher().Sets() {
			for _, d := range set.Dests {
				if d.ActiveCalls() != 0 {
					return false
				}
			}
		}
		return true
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestReinviteFollowsRecordRoute(t *testing.T) {
	requireSipp(t)
	gwPort, p1, p2 := freePort(t), freePort(t), freePort(t)
	u1, u2 := startUAS(t, "uas-reinvite.xml", p1), startUAS(t, "uas-reinvite.xml", p2)
	startGateway(t, gwPort, gwConfig(4, dest(p1, "")+dest(p2, ""), ""))
	res := runUAC(t, scenario("uac-reinvite.xml"), gwPort, 6, 10)
	if res.ok != 6 {
		t.Fatalf("%d of 6 calls with re-INVITE succeeded\n%s", res.ok, tail(res.out, 2000))
	}
	for i, u := range []*sippProc{u1, u2} {
		u.stop()
		reqs := u.received(t)
		if n := count(reqs, "INVITE"); n != 6 { // 3 calls × (INVITE + re-INVITE)
			t.Errorf("backend %d got %d INVITEs, want 6: %v", i, n, reqs)
		}
		if count(reqs, "ACK") != 6 || count(reqs, "BYE") != 3 {
			t.Errorf("backend %d: ACKs %d (want 6), BYEs %d (want 3)", i, count(reqs, "ACK"), count(reqs, "BYE"))
		}
	}
}

func TestFailover(t *testing.T) {
	requireSipp(t)
	t.Run("silent backend: next one takes the call", func(t *testing.T) {
		gwPort, dead, live := freePort(t), freePort(t), freePort(t)
		u := startUAS(t, "uas-rr.xml", live)
		startGateway(t, gwPort, gwConfig(8, dest(dead, ", priority: 10")+dest(live, ", priority: 1"), ""))
		res := runUAC(t, scenario("uac-invite.xml"), gwPort, 3, 3)
		if res.ok != 3 {
			t.Fatalf("%d of 3 calls succeeded with the first-priority backend silent\n%s", res.ok, tail(res.out, 2000))
		}
		u.stop()
		if n := count(u.received(t), "INVITE"); n != 3 {
			t.Errorf("live backend got %d INVITEs, want 3", n)
		}
	})
	t.Run("503 backend: next one takes the call", func(t *testing.T) {
		gwPort, busy, live := freePort(t), freePort(t), freePort(t)
		b := startUAS(t, "uas-503.xml", busy)
		u := startUAS(t, "uas-rr.xml", live)
		startGateway(t, gwPort, gwConfig(8, dest(busy, ", priority: 10")+dest(live, ", priority: 1"), ""))
		res := runUAC(t, scenario("uac-invite.xml"), gwPort, 3, 3)
		if res.ok != 3 {
			t.Fatalf("%d of 3 calls succeeded with the first-priority backend answering 503\n%s", res.ok, tail(res.out, 2000))
		}
		b.stop()
		u.stop()
		if n := count(b.received(t), "INVITE"); n != 3 {
			t.Errorf("503 backend saw %d INVITEs, want 3 (each call tried there first)", n)
		}
		if n := count(u.received(t), "INVITE"); n != 3 {
			t.Errorf("live backend got %d INVITEs, want 3", n)
		}
	})
	t.Run("late answer on the abandoned branch is ACKed and hung up", func(t *testing.T) {
		gwPort, slow, live := freePort(t), freePort(t), freePort(t)
		s := startUAS(t, "uas-late.xml", slow)
		u := startUAS(t, "uas-rr.xml", live)
		startGateway(t, gwPort, gwConfig(8, dest(slow, ", priority: 10")+dest(live, ", priority: 1"), ""))
		res := runUAC(t, scenario("uac-invite.xml"), gwPort, 1, 1)
		if res.ok != 1 {
			t.Fatalf("call did not succeed on the second backend\n%s", tail(res.out, 2000))
		}
		eventually(t, 5*time.Second, "slow backend got ACK and BYE for its late 200", func() bool {
			reqs := s.received(t)
			return count(reqs, "ACK") == 1 && count(reqs, "BYE") == 1
		})
		u.stop()
		if n := count(u.received(t), "INVITE"); n != 1 {
			t.Errorf("live backend got %d INVITEs, want 1", n)
		}
	})
	t.Run("every backend dead: caller gets 503", func(t *testing.T) {
		gwPort, d1, d2 := freePort(t), freePort(t), freePort(t)
		gw := startGateway(t, gwPort, gwConfig(4, dest(d1, "")+dest(d2, ""), ""))
		res := runUAC(t, templated(t, "uac-expect.xml", map[string]string{"EXPECT": "503", "MAXFWD": "70"}), gwPort, 2, 2)
		if res.ok != 2 {
			t.Fatalf("want both calls refused with 503, got %d\n%s", res.ok, tail(res.out, 2000))
		}
		assertNoCalls(t, gw)
	})
	t.Run("TCP backend refusing connections: next one at once", func(t *testing.T) {
		gwPort, refused, live := freePort(t), freePort(t), freePort(t)
		u := startUAS(t, "uas-rr.xml", live)
		tcpDead := fmt.Sprintf("    - {set: 1, uri: \"sip:127.0.0.1:%d;transport=tcp\", priority: 10}\n", refused)
		startGateway(t, gwPort, gwConfig(8, tcpDead+dest(live, ", priority: 1"), ""))
		res := runUAC(t, scenario("uac-invite.xml"), gwPort, 3, 3)
		if res.ok != 3 {
			t.Fatalf("%d of 3 calls succeeded with the first backend refusing TCP\n%s", res.ok, tail(res.out, 2000))
		}
		u.stop()
		if n := count(u.received(t), "INVITE"); n != 3 {
			t.Errorf("live backend got %d INVITEs, want 3", n)
		}
	})
}

func TestCancelDuringRinging(t *testing.T) {
	requireSipp(t)
	gwPort, p := freePort(t), freePort(t)
	u := startUAS(t, "uas-ring-cancel.xml", p)
	gw := startGateway(t, gwPort, gwConfig(4, dest(p, ""), ""))
	res := runUAC(t, scenario("uac-cancel.xml"), gwPort, 3, 3)
	if res.ok != 3 {
		t.Fatalf("%d of 3 cancelled calls completed (caller wants 200 for CANCEL and 487)\n%s", res.ok, tail(res.out, 2000))
	}
	// The caller's 487 goes out as soon as its CANCEL arrives; the backend's own 487, and our
	// ACK for it, may still be on the way.
	eventually(t, 5*time.Second, "backend got 3 CANCELs and the ACKs for its 487s", func() bool {
		reqs := u.received(t)
		return count(reqs, "CANCEL") == 3 && count(reqs, "ACK") == 3
	})
	assertNoCalls(t, gw)
	u.stop()
	reqs := u.received(t)
	if count(reqs, "CANCEL") != 3 || count(reqs, "ACK") != 3 {
		t.Errorf("backend got %d CANCELs and %d ACKs, want 3 and 3: %v", count(reqs, "CANCEL"), count(reqs, "ACK"), reqs)
	}
}

func TestMaxForwardsAndLoops(t *testing.T) {
	requireSipp(t)
	t.Run("Max-Forwards 0 gets 483", func(t *testing.T) {
		gwPort, p := freePort(t), freePort(t)
		u := startUAS(t, "uas-rr.xml", p)
		startGateway(t, gwPort, gwConfig(4, dest(p, ""), ""))
		res := runUAC(t, templated(t, "uac-expect.xml", map[string]string{"EXPECT": "483", "MAXFWD": "0"}), gwPort, 1, 1)
		if res.ok != 1 {
			t.Fatalf("want 483 for Max-Forwards 0\n%s", tail(res.out, 2000))
		}
		u.stop()
		if n := count(u.received(t), "INVITE"); n != 0 {
			t.Errorf("backend got %d INVITEs with Max-Forwards 0", n)
		}
	})
	t.Run("a request sent back to us gets 482", func(t *testing.T) {
		gwPort := freePort(t)
		startGateway(t, gwPort, gwConfig(4, dest(gwPort, ""), ""))
		res := runUAC(t, templated(t, "uac-expect.xml", map[string]string{"EXPECT": "482", "MAXFWD": "70"}), gwPort, 1, 1)
		if res.ok != 1 {
			t.Fatalf("want 482 for a looping INVITE\n%s", tail(res.out, 2000))
		}
	})
}

func TestProbingMarksDeadBackendAndRecovers(t *testing.T) {
	requireSipp(t)
	gwPort, p := freePort(t), freePort(t)
	u := startUAS(t, "uas-rr.xml", p)
	cfg := strings.Replace(gwConfig(4, dest(p, ""), ""), "probe: {interval: 60s, timeout: 1s, threshold: 3, recover: 1}",
		"probe: {interval: 200ms, timeout: 150ms, threshold: 3, recover: 2}", 1)
	gw := startGateway(t, gwPort, cfg)
	uri := fmt.Sprintf("sip:127.0.0.1:%d", p)
	dst := gw.Dispatcher().Find(1, uri)
	state := func() dispatcher.State { return gw.Dispatcher().Find(1, uri).State() }
	if dst == nil || state() != dispatcher.Active {
		t.Fatalf("backend should start active")
	}
	u.stop()
	// interval × threshold, plus one interval for the round in flight and one probe timeout.
	took := eventually(t, 200*time.Millisecond*4+150*time.Millisecond+500*time.Millisecond, "killed backend marked inactive",
		func() bool { return state() == dispatcher.Inactive })
	t.Logf("marked inactive %v after the backend died", took)
	startUAS(t, "uas-rr.xml", p)
	eventually(t, 3*time.Second, "restarted backend marked active", func() bool { return state() == dispatcher.Active })
}

func TestIPv6Listeners(t *testing.T) {
	requireSipp(t)
	gwPort, p := freePort(t), freePort(t)
	u := startUAS(t, "uas-rr.xml", p)
	cfg := strings.Replace(gwConfig(4, dest(p, ""), ""),
		`listen: ["udp:127.0.0.1:%PORT%", "tcp:127.0.0.1:%PORT%"]`,
		"listen: [\"udp:[::1]:%PORT%\", \"tcp:[::1]:%PORT%\", \"udp:127.0.0.1:%PORT%\"]\n  trusted: [\"::1\"] # the IPv6 caller stands for the cluster's other address family", 1)
	gw := startGateway(t, gwPort, cfg)
	if got := strings.Join(gw.Router().Addrs(), " "); !strings.Contains(got, "udp:[::1]:") || !strings.Contains(got, "tcp:[::1]:") {
		t.Fatalf("IPv6 listeners not bound: %s", got)
	}
	// The caller speaks IPv6 to the gateway, the backend IPv4: the gateway bridges the two
	// families, and the ACK and BYE find their way back through the IPv6 Record-Route.
	res := runUAC6(t, gwPort, 3)
	if res.ok != 3 {
		t.Fatalf("%d of 3 calls over IPv6 succeeded\n%s", res.ok, tail(res.out, 2000))
	}
	u.stop()
	reqs := u.received(t)
	if count(reqs, "INVITE") != 3 || count(reqs, "BYE") != 3 {
		t.Errorf("backend got %d INVITEs and %d BYEs, want 3 and 3", count(reqs, "INVITE"), count(reqs, "BYE"))
	}
}

func TestOverloadRefusedEarly(t *testing.T) {
	requireSipp(t)
	gwPort, p := freePort(t), freePort(t)
	u := startUAS(t, "uas-rr.xml", p)
	cfg := strings.Replace(gwConfig(4, dest(p, ""), ""), "timers: {response: 500ms, invite_final: 10s}",
		"timers: {response: 500ms, invite_final: 10s}\n  max_cps: 10\n  retry_after: 7", 1)
	gw := startGateway(t, gwPort, cfg)
	// 60 calls offered at 40/s for 1.5 s against a cap of 10/s (burst 1): most are refused at once
	// with 503 + Retry-After (the scenario fails a call whose 503 lacks it), the rest complete.
	res := runUAC(t, scenario("uac-overload.xml"), gwPort, 60, 40)
	if res.ok != 60 || res.failed != 0 {
		t.Fatalf("want every call either completed or refused with 503 + Retry-After: %d ok, %d failed\n%s",
			res.ok, res.failed, tail(res.out, 2000))
	}
	u.stop()
	admitted := count(u.received(t), "INVITE")
	// 1.5 s at 10/s plus the burst of 1, with slack for the caller's pacing.
	if admitted < 5 || admitted > 25 {
		t.Errorf("backend got %d of 60 calls; the 10/s cap should admit about 16", admitted)
	}
	if refused := 60 - admitted; refused < 30 {
		t.Errorf("only %d calls refused", refused)
	}
	assertNoCalls(t, gw)
}

// TestLargeMessages sends calls whose INVITE and 200 carry a 31 KB body, far past the 4 KiB
// sipgo reads each stream with and the 1300 bytes it would send over UDP: the caller over UDP
// and over TCP, the backend over UDP. Each side checks that the other's last line arrived
// (sipp's check_it fails the call otherwise), so a message cut short anywhere costs the call.
func TestLargeMessages(t *testing.T) {
	requireSipp(t)
	dir := t.TempDir()
	var pad strings.Builder
	for i := range 500 {
		fmt.Fprintf(&pad, "a=x-pad-%04d:%s\n", i, strings.Repeat("p", 48))
	}
	check := `<action><ereg regexp="a=x-pad-0499:p+" search_in="body" check_it="true" assign_to="padok"/></action>`
	padded := func(name, recv string) string {
		b, err := os.ReadFile(scenario(name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.Replace(string(b), "a=rtpmap:0 PCMU/8000\n", "a=rtpmap:0 PCMU/8000\n"+pad.String(), 1)
		if !strings.Contains(s, recv+"/>") {
			t.Fatalf("%s has no %s", name, recv)
		}
		s = strings.Replace(s, recv+"/>", recv+">"+check+"</recv>", 1)
		s = strings.Replace(s, "</scenario>", `<Reference variables="padok"/></scenario>`, 1)
		p := filepath.Join(dir, "large-"+name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	uac := padded("uac-invite.xml", `<recv response="200" rtd="1" rrs="true" response_txn="invite"`)
	uas := padded("uas-rr.xml", `<recv request="INVITE" crlf="true" next="invite"`)
	for _, caller := range []string{"u1", "t1"} {
		t.Run("caller transport "+caller, func(t *testing.T) {
			gwPort, p := freePort(t), freePort(t)
			u := startUASAt(t, "127.0.0.1", uas, p)
			startGateway(t, gwPort, gwConfig(4, dest(p, ""), ""))
			res := runUAC(t, uac, gwPort, 5, 5, "-t", caller)
			if res.ok != 5 || res.failed != 0 {
				t.Fatalf("calls with 31 KB bodies: %d ok, %d failed, want 5 ok\n%s", res.ok, res.failed, tail(res.out, 2000))
			}
			u.stop()
			if reqs := u.received(t); count(reqs, "INVITE") != 5 || count(reqs, "BYE") != 5 {
				t.Errorf("backend got %d INVITEs and %d BYEs, want 5 and 5", count(reqs, "INVITE"), count(reqs, "BYE"))
			}
		})
	}
}
