package test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sessionTTL is the token lifetime of TestAgentPortalSession: long enough for a sign-in and a
// registration on a loaded machine, short enough that three lifetimes fit a quick test.
const sessionTTL = 6 * time.Second

// TestAgentPortalSession drives the agent portal's session handling in headless Chromium
// (test/e2e/agent-session.spec.mjs) against a gateway whose tokens live sessionTTL: 1001 signs
// in and registers; the page refreshes its session by itself and stays registered on its one
// WebSocket for three token lifetimes; the gateway then still holds that one socket and one
// registration, and a sipp call from the cluster's address, long after the socket's original
// token expired, rings the page (it answers and hangs up). Signed out behind the page's back,
// the session's socket closes (1008 "signed out") and the page asks to sign in again without
// reconnecting, whether the browser's cookie went with the logout (a fetch in the page) or not
// (a bearer logout from the script); signed in again, a refresh the gateway refuses (401: the
// cookie is gone) ends the phone with the same message.
func TestAgentPortalSession(t *testing.T) {
	requireSipp(t)
	node := requireBrowser(t)
	shot := filepath.Join(freshArtifacts(t, "agent-session-failure.png"), "agent-session.png")
	gwPort := freePort(t)
	gw := startGateway(t, gwPort, shortTokens(t, edgeConfig(t, freePort(t), ""), sessionTTL))

	// When the script has held the session for three lifetimes it prints "need: cluster-call
	// 1001 <expiry of the login's token>". The gateway's state is read then (the script waits
	// for the call, so it is still registered), and sipp calls from the cluster's address.
	type sample struct {
		at, loginExp           time.Time
		sockets, registrations float64
	}
	var (
		once    sync.Once
		seen    sample
		parseOK bool
		uacDone = make(chan uacResult, 1)
	)
	uacPort, uacMedia := freePort(t), sippMedia(t)
	onLine := func(line string) {
		rest, ok := strings.CutPrefix(line, "need: cluster-call ")
		if !ok {
			return
		}
		once.Do(func() {
			seen = sample{at: time.Now(), sockets: metric(t, gw, "gateway_bridge_sockets"),
				registrations: metric(t, gw, "gateway_sip_registrations")}
			f := strings.Fields(rest)
			if len(f) != 2 {
				return // no call: the test fails on the missing expiry and the missing call
			}
			var err error
			seen.loginExp, err = time.Parse(time.RFC3339Nano, f[1])
			parseOK = err == nil
			user := f[0]
			go func() {
				uacDone <- runSippFrom(t, scenario("uac-webrtc-call.xml"), "127.0.0.3", uacPort, fmt.Sprintf("127.0.0.1:%d", gwPort), 1,
					append([]string{"-s", user}, uacMedia...)...)
			}()
		})
	}

	runBrowserScript(t, node, "agent-session.spec.mjs", []string{
		"DUALGATE_URL=http://" + gw.HTTPAddr(),
		"DUALGATE_TTL=" + strconv.Itoa(int(sessionTTL/time.Second)),
		"DUALGATE_SCREENSHOT=" + shot,
	}, onLine)

	// After three lifetimes of refreshes: one agent socket, one registration, and the token the
	// socket opened with long expired.
	if seen.at.IsZero() {
		t.Fatal("the script never asked for the cluster's call")
	}
	if !parseOK {
		t.Fatal("the script's cluster-call line carries no login expiry")
	}
	if seen.sockets != 1 || seen.registrations != 1 {
		t.Errorf("after %d token lifetimes the gateway holds %v agent sockets and %v registrations, want 1 and 1",
			3, seen.sockets, seen.registrations)
	}
	if past := seen.at.Sub(seen.loginExp); past < sessionTTL {
		t.Errorf("the gateway was looked at %v after the login's token expired, want at least a ttl (%v)", past, sessionTTL)
	} else {
		t.Logf("%v past the login token's expiry: %v agent socket, %v registration", past.Round(time.Millisecond), seen.sockets, seen.registrations)
	}

	// The cluster's call reached the page on that socket: 180, 200 with a WebRTC answer (the
	// scenario checks its SDP), and the page's BYE.
	checkClusterCall(t, uacDone)

	// Both sessions ended: no socket, no registration, no call left.
	eventually(t, 3*time.Second, "no agent socket left", func() bool { return metric(t, gw, "gateway_bridge_sockets") == 0 })
	eventually(t, 3*time.Second, "no registration left", func() bool { return metric(t, gw, "gateway_sip_registrations") == 0 })
	eventually(t, 3*time.Second, "no call left in the gateway", func() bool { return len(gw.Router().Dialogs()) == 0 })
}
