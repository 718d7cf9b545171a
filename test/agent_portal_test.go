package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedJsSIP is the JsSIP version static/agent/build/package-lock.json pins: the bundle the
// portal serves must be that one.
func lockedJsSIP(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "static", "agent", "build", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(data, &lock); err != nil {
		t.Fatalf("package-lock.json: %v", err)
	}
	v := lock.Packages["node_modules/jssip"].Version
	if v == "" {
		t.Fatal("package-lock.json pins no jssip")
	}
	return v
}

// TestAgentPortalCall drives the agent softphone (static/agent, JsSIP over the WebSocket
// bridge) in headless Chromium: agents 1001 and 1002 sign in on two pages and register; 1001
// calls a number, which the dispatcher sends to a sipp backend that answers with WebRTC SDP and
// hangs up itself after 1.5 s (the page shows the call, then "the other party hung up"); a sipp
// caller on the cluster's address calls 1001, the page rings, the test answers and hangs up
// (the BYE reaches sipp); 1001 calls 1002, 1002 answers, audio RTP flows both ways (getStats),
// hold and mute show on both sides, 1002 hangs up; 1001's socket drops and the page reconnects
// and registers again; 1001 signs out. The script is test/e2e/agent.spec.mjs; the screenshot of
// 1001 in the call goes to test/artifacts/agent-portal.png.
//
// sipp does no ICE or DTLS, so the calls with sipp carry no media: they check the SIP, and that
// the browser takes sipp's SDP (the page would otherwise end the call with "media not
// compatible" and send BYE). Both sipp peers must finish their scenarios (exit status 0), and
// their message traces must show what reached them.
func TestAgentPortalCall(t *testing.T) {
	requireSipp(t)
	node := requireBrowser(t)
	shot := filepath.Join(freshArtifacts(t, "agent-portal.png", "agent-portal-incoming.png", "agent-portal-failure-1001.png",
		"agent-portal-failure-1002.png"), "agent-portal.png")

	// The backend (the cluster, 127.0.0.3) starts before the gateway, so the gateway's first
	// probe round reaches it: one OPTIONS, answered, then the one call; -m 2 makes it exit once
	// both are done. Probes are spaced far apart so no second one comes during the run.
	backend := freePort(t)
	uas := startUASAt(t, "127.0.0.3", scenario("uas-webrtc-bye.xml"), backend, append([]string{"-m", "2"}, sippMedia(t)...)...)
	cfg := edgeConfig(t, backend, "")
	if !strings.Contains(cfg, "interval: 60s") {
		t.Fatal("edgeConfig no longer sets the probe interval this test lengthens")
	}
	gwPort := freePort(t)
	gw := startGateway(t, gwPort, strings.Replace(cfg, "interval: 60s", "interval: 10m", 1))

	// The portal is served like the admin one: /agent redirects, the files carry the CSP (whose
	// connect-src 'self' covers the same-host WebSocket; the browser script fails on any CSP
	// refusal), and the JsSIP bundle goes out compressed.
	noRedirect := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get("http://" + gw.HTTPAddr() + "/agent")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/agent/" {
		t.Fatalf("GET /agent: %d to %q, want 301 to /agent/", res.StatusCode, res.Header.Get("Location"))
	}
	req, _ := http.NewRequest("GET", "http://"+gw.HTTPAddr()+"/agent/vendor/jssip.min.js", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	if res, err = noRedirect.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != "gzip" ||
		!strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
		t.Fatalf("GET /agent/vendor/jssip.min.js: %d %v", res.StatusCode, res.Header)
	}
	if res, err = noRedirect.Get("http://" + gw.HTTPAddr() + "/agent/build/package.json"); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /agent/build/package.json: %d, want 404 (the build folder is not embedded)", res.StatusCode)
	}

	// The cluster's call to 1001 starts when the script asks for it (a line "need: cluster-call
	// 1001" on its output), once the page is registered and idle. It comes from the backend's
	// address, which the gateway trusts as the cluster.
	uacPort, uacMedia := freePort(t), sippMedia(t)
	uacDone := make(chan uacResult, 1)
	var uacAsked sync.Once
	callFromCluster := func(user string) {
		uacAsked.Do(func() {
			go func() {
				uacDone <- runSippFrom(t, scenario("uac-webrtc-call.xml"), "127.0.0.3", uacPort, fmt.Sprintf("127.0.0.1:%d", gwPort), 1,
					append([]string{"-s", user}, uacMedia...)...)
			}()
		})
	}

	runBrowserScript(t, node, "agent.spec.mjs", []string{
		"DUALGATE_URL=http://" + gw.HTTPAddr(),
		"DUALGATE_NUMBER=5551000",
		"DUALGATE_JSSIP_VERSION=" + lockedJsSIP(t),
		"DUALGATE_SCREENSHOT=" + shot,
	}, func(line string) {
		if user, ok := strings.CutPrefix(line, "need: cluster-call "); ok {
			callFromCluster(strings.TrimSpace(user))
		}
	})

	// (a) The call to the number went through the gateway to the backend, which answered with
	// WebRTC SDP, got the browser's ACK and hung up with its own BYE, which the browser answered
	// 200. The backend exits 0 only if its whole scenario ran: the INVITE carried a WebRTC offer
	// (opus, mid, sha-256 fingerprint), the ACK came, the 200 to its BYE came.
	select {
	case <-uas.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the backend did not finish its scenario (probe and call); it received %v\n%s", sippTrace(t, uas.msgLog), tail(uas.out.String(), 3000))
	}
	uas.stopOnce.Do(func() {}) // it has exited: nothing left to stop
	if rc := uas.cmd.ProcessState.ExitCode(); rc != 0 {
		t.Errorf("backend sipp exited %d, want 0 (its scenario completed)\n%s", rc, tail(uas.out.String(), 3000))
	}
	if got, want := strings.Join(sippTrace(t, uas.msgLog), ", "), "OPTIONS, INVITE, ACK, 200 BYE"; got != want {
		t.Errorf("backend received %s, want %s (the probe, then the call; no BYE from the browser)", got, want)
	} else {
		t.Logf("backend received: %s", got)
	}

	// (b) The cluster's call to 1001: the page rang (180), answered with a WebRTC answer (the
	// scenario checks the 200's SDP), and its BYE reached sipp, which answered it.
	checkClusterCall(t, uacDone)

	// Every call ended, at the gateway too; 1002's page closed with the browser.
	eventually(t, 3*time.Second, "no call left in the gateway", func() bool { return len(gw.Router().Dialogs()) == 0 })
	eventually(t, 3*time.Second, "no registration left", func() bool { return metric(t, gw, "gateway_sip_registrations") == 0 })
	if _, err := os.Stat(shot); err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
}

// sippMedia gives a sipp peer its own media port (two sipp on one address would share the
// default 6000) and names it to the WebRTC scenarios' host candidate, [rtp_port].
func sippMedia(t *testing.T) []string {
	port := strconv.Itoa(freePort(t))
	return []string{"-mp", port, "-key", "rtp_port", port}
}

// sippTrace lists, in order, the messages a sipp process received according to its
// -message_file: requests as their method, responses as "code method" (from the CSeq).
func sippTrace(t *testing.T, msgLog string) []string {
	t.Helper()
	var out []string
	for _, lines := range sippReceived(t, msgLog) {
		var first, cseq string
		for _, l := range lines {
			if first == "" && (strings.HasPrefix(l, "SIP/2.0 ") || requestLine.MatchString(l)) {
				first = l
			}
			if v, ok := strings.CutPrefix(l, "CSeq:"); ok && cseq == "" {
				if f := strings.Fields(v); len(f) == 2 {
					cseq = f[1]
				}
			}
		}
		switch {
		case strings.HasPrefix(first, "SIP/2.0 "):
			out = append(out, strings.Fields(first)[1]+" "+cseq)
		case first != "":
			out = append(out, strings.Fields(first)[0])
		}
	}
	return out
}

// checkClusterCall waits for the sipp caller on the cluster's address (uac-webrtc-call.xml) that
// a browser script asked for: it must have completed its one call, having received 180, a 200
// (whose WebRTC answer the scenario checks) and the page's BYE.
func checkClusterCall(t *testing.T, done <-chan uacResult) {
	t.Helper()
	select {
	case r := <-done:
		if r.rc != 0 || r.ok != 1 {
			t.Errorf("cluster caller sipp: exit %d, %d calls completed, want exit 0 and 1\n%s", r.rc, r.ok, tail(r.out, 3000))
		}
		got := strings.Join(sippTrace(t, r.msgLog), ", ")
		if !regexp.MustCompile(`^(100 INVITE, )?180 INVITE, 200 INVITE, BYE$`).MatchString(got) {
			t.Errorf("cluster caller received %s, want (100,) 180, 200 to its INVITE, then the page's BYE", got)
		}
		t.Logf("cluster caller received: %s", got)
	case <-time.After(20 * time.Second):
		t.Error("the script never asked for the cluster's call to the agent, or sipp did not finish")
	}
}
