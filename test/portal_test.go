package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// chromiumPath is Debian's Chromium. Playwright's own browser download does not work on these
// machines, so playwright-core drives the system browser.
const chromiumPath = "/usr/bin/chromium"

// requireBrowser checks what the browser tests need and names what to install when something
// is missing: the test fails, it does not skip. It returns the node executable.
func requireBrowser(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: install Node.js 20 or later with npm, then run: npm ci --prefix test/e2e")
	}
	if v, err := exec.Command(node, "--version").Output(); err != nil {
		t.Fatalf("node --version: %v", err)
	} else if major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(v)), "v"), "."); atoi(major) < 20 {
		t.Fatalf("node %s is too old: playwright-core needs Node.js 20 or later", strings.TrimSpace(string(v)))
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found: install the Debian package chromium (apt-get install chromium)", chromiumPath)
	}
	if _, err := os.Stat(filepath.Join("e2e", "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatal("test/e2e/node_modules/playwright-core is missing: run: npm ci --prefix test/e2e (or make test, which does)")
	}
	return node
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// freshArtifacts makes test/artifacts and removes the named files a previous run left there (a
// stale picture must not pass for this run's). It returns the folder's absolute path.
func freshArtifacts(t *testing.T, names ...string) string {
	t.Helper()
	dir, err := filepath.Abs("artifacts")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		_ = os.Remove(filepath.Join(dir, name))
	}
	return dir
}

// runBrowserScript runs the Playwright script test/e2e/<script> with node (see requireBrowser),
// with env added to this process's environment and DUALGATE_CHROMIUM set, and logs everything
// it wrote. The script has its own deadline of 120 s; it is killed at 150 s. onLine, when not
// nil, gets each line of its standard output as it comes (a script asks the test for things
// that way). A script that fails fails the test.
func runBrowserScript(t *testing.T, node, script string, env []string, onLine func(string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = "e2e"
	cmd.Env = append(append(os.Environ(), env...), "DUALGATE_CHROMIUM="+chromiumPath)
	out := &lockedWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	if onLine != nil {
		cmd.Stdout = &lineWriter{out: out, line: onLine}
	}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	t.Logf("browser test (%v):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("node %s: %v (ctx: %v)", script, err, ctx.Err())
	}
}

// lineWriter copies a process's output to out and hands each complete line to line.
type lineWriter struct {
	out     *lockedWriter
	line    func(string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	_, _ = w.out.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}

// portalConfig: backends a and b in set 1 (round-robin), a destination nobody answers in set
// 2, probes every 300 ms so latencies show at once, the embedded login with the repository's
// demo users, and a login rate high enough that the per-user lockout, not the per-IP limit,
// is what the test meets. Digest with MD5 (what sipp answers) and a ban after 3 failed
// authentications, so the registrations and bans panels have something real to show.
func portalConfig(a, b, dead int, usersFile string) string {
	return fmt.Sprintf(`
log: {level: debug}
sip:
  listen: ["udp:127.0.0.1:%%PORT%%", "tcp:127.0.0.1:%%PORT%%"]
  timers: {response: 500ms, invite_final: 10s}
  routes: [{name: t, methods: [INVITE], set: 1, algorithm: 4}]
  # The calls come from a carrier: the cluster itself only calls users.
  trunks: [{name: carrier, sources: ["127.0.0.2"], set: 1, algorithm: 4}]
  auth: {algorithms: [MD5]}
  guard: {auth_failures: 3}
users_file: %q
http:
  listen: "127.0.0.1:0"
  jwt: {ephemeral_secret: true}
  rate_limit: {login_per_minute: 600}
dispatcher:
  destinations:
    - {set: 1, uri: "sip:127.0.0.1:%d"}
    - {set: 1, uri: "sip:127.0.0.1:%d"}
    - {set: 2, uri: "sip:127.0.0.1:%d"}
  probe: {interval: 300ms, timeout: 250ms, threshold: 2, recover: 1}
`, usersFile, a, b, dead)
}

// startCalls starts a sipp caller that places n calls through the gateway and holds each for
// two minutes, so they are in progress while the browser looks. It is stopped (by its PID)
// when the test ends.
func startCalls(t *testing.T, gwPort, n int) {
	t.Helper()
	dir := t.TempDir()
	p := &sippProc{msgLog: filepath.Join(dir, "messages.log"), out: &bytes.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command("sipp", "-sf", scenario("uac-invite.xml"), "-i", "127.0.0.2", "-p", strconv.Itoa(freePort(t)),
		"-s", "1000", "-nostdin", "-m", strconv.Itoa(n), "-l", strconv.Itoa(n), "-r", strconv.Itoa(n), "-d", "120000",
		"-trace_err", "-error_file", filepath.Join(dir, "err.log"), fmt.Sprintf("127.0.0.1:%d", gwPort))
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sipp caller: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop() })
}

// hostileUserAgent is the User-Agent of a registration the portal must show as text: markup
// in it would be an element (and the CSP would report the handler) if the page used innerHTML.
const hostileUserAgent = `Evil "phone" <img src=x onerror="window.pwned=1"><b>bold</b> & co`

// registerWithUserAgent registers user from ip (any port) with the given User-Agent, answering
// the MD5 challenge by hand (sipp's User-Agent is fixed by its scenario).
func registerWithUserAgent(t *testing.T, gwPort int, ip, user, userAgent string) {
	t.Helper()
	c := dialUDP(t, ip, gwPort)
	withUA := func(msg []byte) []byte {
		return []byte(strings.Replace(string(msg), "Content-Length:", "User-Agent: "+userAgent+"\r\nContent-Length:", 1))
	}
	ch := c.exchange(t, withUA(c.register(user, "", 600)), time.Second)
	if code(ch) != 401 {
		t.Fatalf("REGISTER from %s: want 401, got %q", ip, firstLine(ch))
	}
	var nonce string
	for _, h := range headerValues(ch, "WWW-Authenticate") {
		if strings.Contains(h, "algorithm=MD5") {
			nonce = param(h, "nonce")
		}
	}
	if nonce == "" {
		t.Fatalf("no MD5 challenge in %q", headerValues(ch, "WWW-Authenticate"))
	}
	auth := digestMD5(user, demoPassword, nonce, "REGISTER", c.ruri(), 1)
	if got := c.exchange(t, withUA(c.register(user, auth, 600)), time.Second); code(got) != 200 {
		t.Fatalf("REGISTER from %s with credentials: want 200, got %q", ip, firstLine(got))
	}
}

// TestAdminPortal drives the embedded admin portal in headless Chromium against a live gateway
// with real backends and calls in progress: sign-in (wrong password, admin, agent refused,
// lockout with Retry-After), live dispatcher state and latency, Drain, Enable and Disable, the
// calls table, the registrations (a sipp phone, and one whose User-Agent is markup), the bans
// (a source banned for wrong passwords, lifted from the page), sign-out. The script is test/e2e/admin.spec.mjs; the screenshot of the live
// view goes to test/artifacts/admin-portal.png.
func TestAdminPortal(t *testing.T) {
	requireSipp(t)
	node := requireBrowser(t)
	usersFile, err := filepath.Abs(filepath.Join("..", "configs", "users.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(usersFile); err != nil {
		t.Fatalf("demo users: %v", err)
	}
	shot := filepath.Join(freshArtifacts(t, "admin-portal.png", "admin-portal-login.png", "admin-portal-failure.png"), "admin-portal.png")

	gwPort, pa, pb, dead := freePort(t), freePort(t), freePort(t), freePort(t)
	startUAS(t, "uas-rr.xml", pa)
	startUAS(t, "uas-rr.xml", pb)
	uriA, uriB := fmt.Sprintf("sip:127.0.0.1:%d", pa), fmt.Sprintf("sip:127.0.0.1:%d", pb)
	uriDead := fmt.Sprintf("sip:127.0.0.1:%d", dead)
	gw := startGateway(t, gwPort, portalConfig(pa, pb, dead, usersFile))

	const calls = 4
	startCalls(t, gwPort, calls)
	eventually(t, 10*time.Second, fmt.Sprintf("%d calls confirmed through the gateway", calls), func() bool {
		ds := gw.Router().Dialogs()
		if len(ds) < calls {
			return false
		}
		for _, d := range ds {
			if d.State != "confirmed" {
				return false
			}
		}
		return true
	})

	// A phone registers as 1002 from 127.0.0.5 (sipp), another binding of 1002 from 127.0.0.6
	// carries markup in its User-Agent, and 127.0.0.9 guesses 1001's password until banned.
	phonePort := freePort(t)
	if res := register(t, gwPort, "127.0.0.5", phonePort, "1002", demoPassword, "200", 600); res.ok != 1 {
		t.Fatalf("phone registration failed\n%s", tail(res.out, 3000))
	}
	registerWithUserAgent(t, gwPort, "127.0.0.6", "1002", hostileUserAgent)
	const banned = "127.0.0.9"
	for i := 0; i < 3; i++ {
		if res := register(t, gwPort, banned, 0, "1001", "wrong", "401", 600); res.ok != 1 {
			t.Fatalf("wrong password %d from %s: want a new 401\n%s", i+1, banned, tail(res.out, 3000))
		}
	}
	token := adminToken(t, gw)
	if code, body := adminCall(t, gw, "GET", "/api/admin/bans", token, ""); code != 200 ||
		!strings.Contains(body, `"prefix":"`+banned+`/32"`) || !strings.Contains(body, `"reason":"auth"`) {
		t.Fatalf("%s is not banned for auth before the browser test: %d %s", banned, code, body)
	}

	runBrowserScript(t, node, "admin.spec.mjs", []string{
		"DUALGATE_URL=http://" + gw.HTTPAddr(),
		"DUALGATE_DRAIN=" + uriA,
		"DUALGATE_DISABLE=" + uriB,
		"DUALGATE_DEAD=" + uriDead,
		"DUALGATE_MIN_CALLS=" + strconv.Itoa(calls),
		"DUALGATE_REG_USER=1002",
		"DUALGATE_REG_SOURCE=" + fmt.Sprintf("127.0.0.5:%d", phonePort),
		"DUALGATE_REG_UA_SOURCE=127.0.0.6",
		"DUALGATE_REG_UA=" + hostileUserAgent,
		"DUALGATE_BAN=" + banned,
		"DUALGATE_SCREENSHOT=" + shot,
	}, nil)

	// What the browser did must be what the gateway holds now: A drained and enabled again, B
	// disabled, and no call lost to either change.
	for _, c := range []struct {
		uri  string
		want dispatcher.State
	}{{uriA, dispatcher.Active}, {uriB, dispatcher.Disabled}, {uriDead, dispatcher.Inactive}} {
		set := 1
		if c.uri == uriDead {
			set = 2
		}
		d := gw.Dispatcher().Find(set, c.uri)
		if d == nil {
			t.Fatalf("set %d lost %s", set, c.uri)
		}
		if d.State() != c.want {
			t.Errorf("%s is %s in the gateway after the browser test, want %s", c.uri, d.State(), c.want)
		}
	}
	if n := len(gw.Router().Dialogs()); n != calls {
		t.Errorf("%d calls tracked after drain/enable/disable, want all %d still up", n, calls)
	}
	// The Lift button ended the ban in the gateway; the registrations are untouched. (A fresh
	// token: the browser signed out meanwhile.)
	token = adminToken(t, gw)
	if code, body := adminCall(t, gw, "GET", "/api/admin/bans", token, ""); code != 200 || strings.Contains(body, `"`+banned+`/`) {
		t.Errorf("%s is still banned after Lift in the browser: %d %s", banned, code, body)
	}
	if code, body := adminCall(t, gw, "GET", "/api/admin/registrations", token, ""); code != 200 ||
		!strings.Contains(body, fmt.Sprintf(`"source":"127.0.0.5:%d"`, phonePort)) {
		t.Errorf("the phone's registration is gone after the browser test: %d %s", code, body)
	}
	if _, err := os.Stat(shot); err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
}
