package tlsmode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Pebble is Let's Encrypt's small ACME test server. The ACME test builds it (and
// pebble-challtestsrv, its DNS server) from the Go module proxy: nothing to install.
const pebbleModule, pebbleVersion = "github.com/letsencrypt/pebble/v2", "v2.10.1"

type pebbleBins struct{ pebble, challtestsrv string }

// buildPebble builds Pebble's two commands into a temporary directory (`go install
// module/cmd@version`, outside this module, so go.mod does not change).
func buildPebble(t *testing.T) pebbleBins {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the ACME test builds Pebble with the go command, which is not on PATH: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "install",
		pebbleModule+"/cmd/pebble@"+pebbleVersion, pebbleModule+"/cmd/pebble-challtestsrv@"+pebbleVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building Pebble %s with `go install` failed: %v\n%s\n"+
			"The ACME test needs the Go module proxy (or a module cache that already holds Pebble %[1]s and its dependencies).",
			pebbleVersion, err, out)
	}
	return pebbleBins{pebble: filepath.Join(dir, "pebble"), challtestsrv: filepath.Join(dir, "pebble-challtestsrv")}
}

// proc is a child process of the test, stopped by PID when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	out  *logBuffer
	once sync.Once
}

func startProc(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{}), out: &logBuffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) stop(t *testing.T) {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
		}
	})
}

// waitReady polls check until it succeeds, the process exits, or the timeout passes.
func (p *proc) waitReady(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready (%v):\n%s", p.name, p.cmd.ProcessState, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %v\n%s", p.name, timeout, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// acmeEnv is what every Pebble instance of the test shares: the binaries, a CA for Pebble's
// own HTTPS (what acme.ca_file trusts), and challtestsrv answering 127.0.0.1 for every name.
type acmeEnv struct {
	bins       pebbleBins
	dir        string
	caFile     string
	caPool     *x509.CertPool
	serverCert string // Pebble's HTTPS certificate and key, signed by the CA
	serverKey  string
	dnsAddr    string
}

func newACMEEnv(t *testing.T, bins pebbleBins) *acmeEnv {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCert(t, certOpts{cn: "dualgate test ACME server CA", isCA: true})
	srv := newTestCert(t, certOpts{cn: "pebble", dns: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}, parent: ca})
	e := &acmeEnv{
		bins: bins, dir: dir, caPool: ca.pool(),
		caFile:     writeFile(t, dir, "acme-server-ca.pem", ca.certPEM),
		serverCert: writeFile(t, dir, "pebble-cert.pem", srv.certPEM),
		serverKey:  writeFile(t, dir, "pebble-key.pem", srv.keyPEM),
	}
	dnsPort := freePort(t)
	e.dnsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
	// Only the DNS server: its challenge servers would take ports, and AAAA answers would
	// send Pebble's validation to ::1 first.
	dns := startProc(t, "pebble-challtestsrv", nil, bins.challtestsrv,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dnsserver", e.dnsAddr,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))))
	dns.waitReady(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", e.dnsAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return e
}

// pebble is one running Pebble.
type pebble struct {
	*proc
	dirURL string
	listen string
	roots  *x509.CertPool // this instance's issuing root, /roots/0
}

// startPebble starts a Pebble whose validations dial httpPort (HTTP-01) and tlsPort
// (TLS-ALPN-01) on 127.0.0.1, and waits until its directory answers.
func (e *acmeEnv) startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": e.serverCert, "privateKey": e.serverKey,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter":   map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm": "ecdsa",
		"profiles":     map[string]any{"default": map[string]any{"description": "default", "validityPeriod": 7776000}},
	}}
	js, _ := json.Marshal(cfg)
	cfgFile := writeFile(t, t.TempDir(), "pebble.json", js)
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}
	p := &pebble{proc: startProc(t, "pebble", env, e.bins.pebble, "-config", cfgFile, "-dnsserver", e.dnsAddr),
		dirURL: "https://" + listen + "/dir", listen: listen}

	client := &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.caPool}}}
	t.Cleanup(client.CloseIdleConnections)
	get := func(url string) ([]byte, error) {
		resp, err := client.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return body, err
	}
	p.waitReady(t, 10*time.Second, func() error { _, err := get(p.dirURL); return err })
	rootPEM, err := get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble /roots/0 is not PEM: %q", rootPEM)
	}
	return p
}

func (e *acmeEnv) config(p *pebble, cacheDir string) Config {
	c := DefaultConfig()
	c.Mode = ModeACME
	c.ACME.Hosts = []string{"gw.test"}
	c.ACME.CacheDir = cacheDir
	c.ACME.DirectoryURL = p.dirURL
	c.ACME.Email = "ops@dualgate.test"
	c.ACME.CAFile = e.caFile
	return c
}

// checkIssued checks a handshake's leaf is for gw.test and chains to roots (Pebble's).
func checkIssued(t *testing.T, st tls.ConnectionState) {
	t.Helper()
	leaf := st.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "gw.test" {
		t.Fatalf("leaf DNS names %q, want [gw.test]", leaf.DNSNames)
	}
	if len(st.VerifiedChains) == 0 {
		t.Fatal("no verified chain")
	}
	chain := st.VerifiedChains[0]
	t.Logf("chain: %d certificates, %q issued by %q, root %q", len(chain), leaf.DNSNames, leaf.Issuer.CommonName,
		chain[len(chain)-1].Subject.CommonName)
}

// TestACMEPebble obtains real certificates from Pebble on loopback: by TLS-ALPN-01 on the
// HTTPS listener, and by HTTP-01 on the plain-HTTP listener; shows the certificate is cached
// and served from the cache with Pebble gone, and the plain-HTTP listener's redirect.
func TestACMEPebble(t *testing.T) {
	t0 := time.Now()
	bins := buildPebble(t)
	t.Logf("pebble %s built in %v", pebbleVersion, time.Since(t0).Round(time.Millisecond))
	env := newACMEEnv(t, bins)

	t.Run("tls-alpn-01, cache, redirect", func(t *testing.T) {
		tlsLn := listenLoopback(t)
		// Nothing serves HTTP, and HTTPHandler is not called yet: TLS-ALPN-01 is the only way.
		peb := env.startPebble(t, freePort(t), portOf(tlsLn))
		cacheDir := filepath.Join(t.TempDir(), "acme-cache")
		cfg := env.config(peb, cacheDir)
		log, logs := testLogger(t, "provider 1")
		p, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLSOn(t, tlsLn, p, helloHandler)
		client := &tls.Config{ServerName: "gw.test", RootCAs: peb.roots, NextProtos: []string{"h2", "http/1.1"}}

		start := time.Now()
		st, err := handshake(addr, client, 20*time.Second) // blocks while autocert obtains the certificate
		if err != nil {
			t.Fatalf("first handshake (issuance): %v", err)
		}
		t.Logf("issuance + first handshake: %v", time.Since(start).Round(time.Millisecond))
		checkIssued(t, st)
		if st.Version < tls.VersionTLS12 || st.NegotiatedProtocol != "h2" {
			t.Fatalf("version %x ALPN %q", st.Version, st.NegotiatedProtocol)
		}
		leaf := st.PeerCertificates[0]

		resp, body := httpsGet(t, addr, "https://gw.test/hello", client)
		if resp.StatusCode != 200 || body != "hello over HTTP/2.0" {
			t.Fatalf("GET: %d %q", resp.StatusCode, body)
		}
		if got := logs.count("acme certificate stored"); got != 1 {
			t.Fatalf("%d 'acme certificate stored' log lines, want 1", got)
		}

		// Cached on disk.
		for _, name := range []string{"acme_account+key", "gw.test"} {
			if fi, err := os.Stat(filepath.Join(cacheDir, name)); err != nil || fi.Size() == 0 {
				t.Fatalf("cache %s: %v", name, err)
			}
		}

		// Pebble gone, a new provider on the same cache serves the same certificate.
		peb.stop(t)
		if _, err := net.DialTimeout("tcp", peb.listen, time.Second); err == nil {
			t.Fatal("pebble still answers after stop")
		}
		log2, logs2 := testLogger(t, "provider 2")
		p2, err := New(cfg, log2)
		if err != nil {
			t.Fatal(err)
		}
		addr2 := serveTLS(t, p2, helloHandler)
		start = time.Now()
		st2, err := handshake(addr2, client, 10*time.Second)
		if err != nil {
			t.Fatalf("handshake from the cache, Pebble stopped: %v", err)
		}
		t.Logf("handshake from the cache: %v", time.Since(start).Round(time.Millisecond))
		checkIssued(t, st2)
		if !st2.PeerCertificates[0].Equal(leaf) {
			t.Fatal("the second provider serves another certificate than the cached one")
		}
		if logs2.count("acme certificate stored") != 0 {
			t.Fatal("the second provider stored a certificate: it did not use the cache")
		}

		// A name outside the allowlist gets nothing (and no ACME traffic: Pebble is down anyway).
		if _, err := handshake(addr2, &tls.Config{ServerName: "other.test", RootCAs: peb.roots}, 5*time.Second); err == nil {
			t.Fatal("handshake for other.test succeeded")
		}
		// No SNI (a client that dialled the IP): the first host's certificate.
		noSNI := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			if !cs.PeerCertificates[0].Equal(leaf) {
				return fmt.Errorf("no-SNI handshake got %q", cs.PeerCertificates[0].DNSNames)
			}
			return nil
		}}
		if _, err := handshake(addr2, noSNI, 5*time.Second); err != nil {
			t.Fatalf("handshake without SNI: %v", err)
		}

		// The plain-HTTP listener redirects to HTTPS.
		plain := serveHTTP(t, listenLoopback(t), p2.HTTPHandler())
		req, _ := http.NewRequest("GET", "http://"+plain+"/some/path?q=1", nil)
		req.Host = "gw.test:" + portFromAddr(plain)
		resp, err = noRedirectClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://gw.test/some/path?q=1" {
			t.Fatalf("redirect: %d Location %q, want 308 https://gw.test/some/path?q=1", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("http-01", func(t *testing.T) {
		httpLn := listenLoopback(t)
		// Pebble's TLS-ALPN-01 validations reach a listener that hangs up at once, so that
		// challenge fails and autocert falls back to HTTP-01.
		refuser := listenLoopback(t)
		alpnTried := make(chan struct{})
		var alpnOnce sync.Once
		go func() {
			for {
				c, err := refuser.Accept()
				if err != nil {
					return
				}
				alpnOnce.Do(func() { close(alpnTried) })
				c.Close()
			}
		}()
		peb := env.startPebble(t, portOf(httpLn), portOf(refuser))
		cfg := env.config(peb, filepath.Join(t.TempDir(), "acme-cache"))
		log, _ := testLogger(t, "provider 3")
		p, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}

		type hit struct {
			path, host string
			status     int
		}
		var mu sync.Mutex
		var hits []hit
		h := p.HTTPHandler()
		serveHTTP(t, httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := &statusRecorder{ResponseWriter: w, status: 200}
			h.ServeHTTP(rec, r)
			mu.Lock()
			hits = append(hits, hit{r.URL.Path, r.Host, rec.status})
			mu.Unlock()
		}))
		addr := serveTLS(t, p, helloHandler) // on a port Pebble never dials

		client := &tls.Config{ServerName: "gw.test", RootCAs: peb.roots}
		start := time.Now()
		st, err := handshake(addr, client, 25*time.Second)
		if err != nil {
			t.Fatalf("first handshake (issuance): %v", err)
		}
		t.Logf("issuance by HTTP-01 (after TLS-ALPN-01 failed) + first handshake: %v", time.Since(start).Round(time.Millisecond))
		checkIssued(t, st)

		mu.Lock()
		defer mu.Unlock()
		ok := 0
		for _, h := range hits {
			t.Logf("HTTP-01 request: %s Host %s -> %d", h.path, h.host, h.status)
			if len(h.path) > len(challengePrefix) && h.path[:len(challengePrefix)] == challengePrefix && h.status == 200 {
				ok++
			}
		}
		if ok == 0 {
			t.Fatal("no HTTP-01 validation request was answered 200")
		}
		select {
		case <-alpnTried:
		default:
			t.Fatal("Pebble never tried TLS-ALPN-01 first")
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func portFromAddr(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
