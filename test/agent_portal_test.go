package test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
// calls a number, which reaches the sipp backend (whose RTP/AVP answer the browser refuses, so
// only the SIP is checked: INVITE, ACK, BYE at the backend); 1001 calls 1002, 1002 answers,
// audio RTP flows both ways (getStats), hold and mute show on both sides, 1002 hangs up; 1001's
// socket drops and the page reconnects and registers again; 1001 signs out. The script is
// test/e2e/agent.spec.mjs; the screenshot of 1001 in the call goes to
// test/artifacts/agent-portal.png.
func TestAgentPortalCall(t *testing.T) {
	requireSipp(t)
	node := requireBrowser(t)
	artifacts, err := filepath.Abs("artifacts")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifacts, "agent-portal.png")
	for _, f := range []string{shot, filepath.Join(artifacts, "agent-portal-incoming.png"), filepath.Join(artifacts, "agent-portal-failure-1001.png"),
		filepath.Join(artifacts, "agent-portal-failure-1002.png")} {
		_ = os.Remove(f) // a stale picture must not pass for this run's
	}

	backend := freePort(t)
	uas := startUASAt(t, "127.0.0.3", scenario("uas-rr.xml"), backend)
	gw := startGateway(t, freePort(t), edgeConfig(t, backend, ""))

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

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second) // the script's own deadline is 120 s
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "agent.spec.mjs")
	cmd.Dir = "e2e"
	cmd.Env = append(os.Environ(),
		"DUALGATE_URL=http://"+gw.HTTPAddr(),
		"DUALGATE_NUMBER=5551000",
		"DUALGATE_JSSIP_VERSION="+lockedJsSIP(t),
		"DUALGATE_SCREENSHOT="+shot,
		"DUALGATE_CHROMIUM="+chromiumPath,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	t.Logf("browser test (%v):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("node agent.spec.mjs: %v (ctx: %v)", err, ctx.Err())
	}

	// The call to the number went through the gateway to the backend and was ended there: the
	// browser ACKed the 200 and sent BYE along the Record-Route.
	uas.stop()
	if reqs := uas.received(t); count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
		t.Errorf("backend received %v, want one INVITE, ACK and BYE", reqs)
	}
	// Every call ended, at the gateway too; 1002's page closed with the browser.
	eventually(t, 3*time.Second, "no call left in the gateway", func() bool { return len(gw.Router().Dialogs()) == 0 })
	eventually(t, 3*time.Second, "no registration left", func() bool { return metric(t, gw, "gateway_sip_registrations") == 0 })
	if _, err := os.Stat(shot); err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
}
