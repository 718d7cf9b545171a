package tlsmode

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFilesMode serves a generated certificate over real TLS, then replaces the files and
// shows the next handshakes serve the new pair (by Reload and by the metadata check), that
// a broken replacement keeps the old pair, and that old protocol versions are refused.
func TestFilesMode(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newPair := func(cn string) *testCert {
		return newTestCert(t, certOpts{cn: cn, dns: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	}
	install := func(c *testCert) {
		writeAtomic(t, certPath, c.certPEM)
		writeAtomic(t, keyPath, c.keyPEM)
	}

	first := newPair("first")
	install(first)
	log, logs := testLogger(t, "files")
	p, err := New(Config{Mode: ModeFiles, CertFile: certPath, KeyFile: keyPath}, log)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled() {
		t.Fatal("files mode: Enabled() = false")
	}
	addr := serveTLS(t, p, helloHandler)

	// trusting is a client that trusts every certificate the test generated.
	roots := x509.NewCertPool()
	trusting := func() *tls.Config { return &tls.Config{RootCAs: roots, ServerName: "localhost"} }
	trust := func(c *testCert) { roots.AddCert(c.cert) }
	// served returns the CN of the leaf the server presents now.
	served := func() string {
		t.Helper()
		st, err := handshake(addr, trusting(), 5*time.Second)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return st.PeerCertificates[0].Subject.CommonName
	}
	trust(first)

	t.Run("https GET", func(t *testing.T) {
		resp, body := httpsGet(t, addr, "https://localhost/x", trusting())
		if resp.StatusCode != 200 || body != "hello over HTTP/2.0" {
			t.Fatalf("got %d %q, want 200 over HTTP/2.0", resp.StatusCode, body)
		}
		if v := resp.TLS.Version; v < tls.VersionTLS12 {
			t.Fatalf("TLS version %x < 1.2", v)
		}
		if resp.TLS.NegotiatedProtocol != "h2" {
			t.Fatalf("ALPN %q, want h2", resp.TLS.NegotiatedProtocol)
		}
		// An HTTP/1.1-only client gets http/1.1.
		cfg := trusting()
		cfg.NextProtos = []string{"http/1.1"}
		st, err := handshake(addr, cfg, 5*time.Second)
		if err != nil || st.NegotiatedProtocol != "http/1.1" {
			t.Fatalf("http/1.1 client: %v, ALPN %q", err, st.NegotiatedProtocol)
		}
	})

	t.Run("protocol policy", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			cfg    func(*tls.Config)
			wantOK bool
		}{
			{"TLS 1.3", func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, true},
			{"TLS 1.2 AEAD", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }, true},
			{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, false},
			{"TLS 1.0", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS10 }, false},
			{"TLS 1.2 CBC only", func(c *tls.Config) {
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
					tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
			}, false},
		} {
			cfg := trusting()
			tc.cfg(cfg)
			st, err := handshake(addr, cfg, 5*time.Second)
			switch {
			case tc.wantOK && err != nil:
				t.Errorf("%s: refused: %v", tc.name, err)
			case !tc.wantOK && err == nil:
				t.Errorf("%s: accepted (version %x, suite %s)", tc.name, st.Version, tls.CipherSuiteName(st.CipherSuite))
			case !tc.wantOK:
				t.Logf("%s: refused as expected: %v", tc.name, err)
			}
		}
	})

	t.Run("Reload", func(t *testing.T) {
		p.files.every.Store(int64(time.Hour)) // only Reload may notice
		p.files.nextCheck.Store(time.Now().Add(time.Hour).UnixNano())
		second := newPair("second")
		trust(second)
		install(second)
		if got := served(); got != "first" {
			t.Fatalf("before Reload: serves %q, want first", got)
		}
		if err := p.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := served(); got != "second" {
			t.Fatalf("after Reload: serves %q, want second", got)
		}
	})

	// From here every handshake looks at the files' metadata.
	p.files.every.Store(0)
	p.files.nextCheck.Store(0)

	t.Run("metadata check", func(t *testing.T) {
		third := newPair("third")
		trust(third)
		install(third)
		if got := served(); got != "third" {
			t.Fatalf("after replacing the files: serves %q, want third", got)
		}
		// Rewritten in place (same inode): the modification time tells.
		fourth := newPair("fourth")
		trust(fourth)
		later := time.Now().Add(2 * time.Second) // file times can be coarser than the test is fast
		for path, data := range map[string][]byte{certPath: fourth.certPEM, keyPath: fourth.keyPEM} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, later, later); err != nil {
				t.Fatal(err)
			}
		}
		if got := served(); got != "fourth" {
			t.Fatalf("after rewriting the files in place: serves %q, want fourth", got)
		}
	})

	t.Run("broken replacement keeps the old pair", func(t *testing.T) {
		before := logs.count("reload refused")
		// A key that does not match the certificate (a rotation caught half way, or a mistake).
		writeAtomic(t, keyPath, newPair("other").keyPEM)
		for range 3 {
			if got := served(); got != "fourth" {
				t.Fatalf("after a mismatched key: serves %q, want fourth", got)
			}
		}
		if n := logs.count("reload refused") - before; n != 1 {
			t.Fatalf("the refused pair was logged %d times, want once (not on every handshake)", n)
		}
		if err := p.Reload(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
			t.Fatalf("Reload with a mismatched key: %v, want the mismatch", err)
		}
		// Garbage, and then a missing key file.
		writeAtomic(t, certPath, []byte("not a certificate"))
		if got := served(); got != "fourth" {
			t.Fatalf("after a garbage certificate: serves %q, want fourth", got)
		}
		if err := os.Remove(keyPath); err != nil {
			t.Fatal(err)
		}
		if got := served(); got != "fourth" {
			t.Fatalf("with the key missing: serves %q, want fourth", got)
		}
		if err := p.Reload(); err == nil {
			t.Fatal("Reload with the key missing: no error")
		}
		// An expired certificate is refused too.
		expired := newTestCert(t, certOpts{cn: "expired", dns: []string{"localhost"},
			notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
		install(expired)
		if err := p.Reload(); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Reload with an expired certificate: %v, want expired", err)
		}
		if got := served(); got != "fourth" {
			t.Fatalf("after an expired certificate: serves %q, want fourth", got)
		}
		// A good pair again is picked up.
		fifth := newPair("fifth")
		trust(fifth)
		install(fifth)
		if got := served(); got != "fifth" {
			t.Fatalf("after a good pair again: serves %q, want fifth", got)
		}
	})
}

// TestFilesModeNew: a pair that does not load fails New (the server does not start with
// nothing to serve).
func TestFilesModeNew(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, certOpts{cn: "a", dns: []string{"localhost"}})
	b := newTestCert(t, certOpts{cn: "b", dns: []string{"localhost"}})
	aCert := writeFile(t, dir, "a.pem", a.certPEM)
	aKey := writeFile(t, dir, "a.key", a.keyPEM)
	bKey := writeFile(t, dir, "b.key", b.keyPEM)
	both := writeFile(t, dir, "both.pem", append(append([]byte{}, a.certPEM...), a.keyPEM...))
	expired := newTestCert(t, certOpts{cn: "old", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	oldCert := writeFile(t, dir, "old.pem", expired.certPEM)
	oldKey := writeFile(t, dir, "old.key", expired.keyPEM)

	for _, tc := range []struct {
		name, cert, key, wantErr string
	}{
		{"good", aCert, aKey, ""},
		{"one file with both", both, both, ""},
		{"missing cert", filepath.Join(dir, "nope.pem"), aKey, "no such file"},
		{"missing key", aCert, filepath.Join(dir, "nope.key"), "no such file"},
		{"mismatched key", aCert, bKey, "private key does not match"},
		{"expired", oldCert, oldKey, "expired"},
	} {
		p, err := New(Config{Mode: ModeFiles, CertFile: tc.cert, KeyFile: tc.key}, nil)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		case err == nil && (p.TLSConfig() == nil || p.TLSConfig().MinVersion != tls.VersionTLS12):
			t.Errorf("%s: TLS config %+v", tc.name, p.TLSConfig())
		}
	}
}

// TestOffMode: no TLS, and the plain-HTTP handler has nowhere to redirect to.
func TestOffMode(t *testing.T) {
	for _, cfg := range []Config{DefaultConfig(), {}} {
		p, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Enabled() || p.TLSConfig() != nil {
			t.Fatalf("mode %q: Enabled %v, TLSConfig %v; want off", cfg.Mode, p.Enabled(), p.TLSConfig())
		}
		if err := p.Reload(); err != nil {
			t.Fatal(err)
		}
		if p.HTTPHandler() == nil {
			t.Fatal("nil HTTPHandler")
		}
	}
}
