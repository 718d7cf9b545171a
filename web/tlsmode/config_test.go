package tlsmode

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestValidate(t *testing.T) {
	acme := func(edit func(*ACMEConfig)) Config {
		c := DefaultConfig()
		c.Mode = ModeACME
		c.ACME.Hosts = []string{"gw.example.com"}
		if edit != nil {
			edit(&c.ACME)
		}
		return c
	}
	files := func(cert, key string) Config {
		c := DefaultConfig()
		c.Mode, c.CertFile, c.KeyFile = ModeFiles, cert, key
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings, one per expected error, in order
	}{
		{"default is off", DefaultConfig(), nil},
		{"empty is off", Config{}, nil},
		{"unknown mode", Config{Mode: "on"}, []string{`mode: unknown "on"`}},
		{"mode is case sensitive", Config{Mode: "ACME"}, []string{`mode: unknown "ACME"`}},
		{"off with files set", Config{CertFile: "c.pem", KeyFile: "k.pem"}, []string{"mode: is off (plain HTTP) but cert_file/key_file are set"}},
		{"off with acme hosts", Config{ACME: ACMEConfig{Hosts: []string{"gw.example.com"}}}, []string{"mode: is off (plain HTTP) but acme.hosts is set"}},
		{"files ok", files("c.pem", "k.pem"), nil},
		{"files, one file for both", files("both.pem", "both.pem"), nil},
		{"files without files", files("", ""), []string{"cert_file: required", "key_file: required"}},
		{"files without key", files("c.pem", ""), []string{"key_file: required"}},
		{"acme ok", acme(nil), nil},
		{"acme full", acme(func(a *ACMEConfig) {
			a.Hosts = []string{"gw.example.com", "agents.example.com", "bücher.example"}
			a.Email, a.CAFile, a.HTTPListen = "ops@example.com", "/etc/pebble.pem", "127.0.0.1:5002"
			a.DirectoryURL = "https://127.0.0.1:14000/dir"
		}), nil},
		{"acme empty fields take defaults", acme(func(a *ACMEConfig) { a.CacheDir, a.DirectoryURL, a.HTTPListen = "", "", "" }), nil},
		{"acme without hosts", acme(func(a *ACMEConfig) { a.Hosts = nil }), []string{"acme.hosts: at least one host name is required"}},
		{"acme bad hosts", acme(func(a *ACMEConfig) {
			a.Hosts = []string{"", "https://gw.example.com", "gw.example.com:443", "*.example.com", "localhost",
				"192.0.2.1", "[2001:db8::1]", "2001:db8::1", "bad_name!.example.com", "gw.example.com", "GW.example.com"}
		}), []string{
			`acme.hosts[0] "": empty host name`,
			`acme.hosts[1] "https://gw.example.com": must be a bare host name, without scheme or path`,
			`acme.hosts[2] "gw.example.com:443": must be a bare host name, without port`,
			`acme.hosts[3] "*.example.com": wildcard names need the DNS-01 challenge`,
			`acme.hosts[4] "localhost": needs at least two labels`,
			`acme.hosts[5] "192.0.2.1": IP addresses are not supported`,
			`acme.hosts[6] "[2001:db8::1]": IP addresses are not supported`,
			`acme.hosts[7] "2001:db8::1": IP addresses are not supported`,
			`acme.hosts[8] "bad_name!.example.com": not a valid host name`,
			`acme.hosts[10] "GW.example.com": listed twice`,
		}},
		{"acme plain-http directory", acme(func(a *ACMEConfig) { a.DirectoryURL = "http://127.0.0.1:14000/dir" }),
			[]string{"acme.directory_url \"http://127.0.0.1:14000/dir\": must be an https:// URL"}},
		{"acme directory without host", acme(func(a *ACMEConfig) { a.DirectoryURL = "https:///dir" }),
			[]string{"must be an https:// URL"}},
		{"acme unparsable directory", acme(func(a *ACMEConfig) { a.DirectoryURL = "https://[::1" }), []string{"acme.directory_url:"}},
		{"acme bad email", acme(func(a *ACMEConfig) { a.Email = "not an address" }), []string{"acme.email \"not an address\": must be a bare address"}},
		{"acme email with a name", acme(func(a *ACMEConfig) { a.Email = "Ops <ops@example.com>" }), []string{"acme.email"}},
		{"acme listen without port", acme(func(a *ACMEConfig) { a.HTTPListen = "80" }), []string{"acme.http_listen \"80\": must be host:port"}},
		{"acme listen empty port", acme(func(a *ACMEConfig) { a.HTTPListen = "127.0.0.1:" }), []string{"acme.http_listen"}},
		{"everything wrong at once", acme(func(a *ACMEConfig) {
			a.Hosts, a.DirectoryURL, a.Email, a.HTTPListen = nil, "ftp://x", "x", "nope"
		}), []string{"acme.hosts:", "acme.directory_url", "acme.email", "acme.http_listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := tc.cfg.Validate()
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %q, want %d %q", len(errs), errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, err, tc.want[i])
				}
			}
			// New refuses what Validate refuses, with the same messages.
			if len(tc.want) > 0 {
				if _, err := New(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want[0]) {
					t.Errorf("New: %v, want %q", err, tc.want[0])
				}
			}
		})
	}
}

// TestConfigYAML: the keys are the documented ones, decoded strictly over the defaults as
// the gateway does.
func TestConfigYAML(t *testing.T) {
	src := `
mode: acme
acme:
  hosts: [gw.example.com]
  email: ops@example.com
  ca_file: /etc/ca.pem
`
	c := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Mode = ModeACME
	want.ACME.Hosts, want.ACME.Email, want.ACME.CAFile = []string{"gw.example.com"}, "ops@example.com", "/etc/ca.pem"
	if c.Mode != want.Mode || c.ACME.CacheDir != "acme-cache" || c.ACME.HTTPListen != ":80" ||
		c.ACME.DirectoryURL != "https://acme-v02.api.letsencrypt.org/directory" || c.ACME.Email != want.ACME.Email ||
		c.ACME.CAFile != want.ACME.CAFile || len(c.ACME.Hosts) != 1 {
		t.Fatalf("decoded %+v, want %+v", c, want)
	}
	var keys Config
	if err := yaml.Unmarshal([]byte("cert_file: a\nkey_file: b\nacme: {cache_dir: d, directory_url: u, http_listen: l}"), &keys); err != nil {
		t.Fatal(err)
	}
	if keys.CertFile != "a" || keys.KeyFile != "b" || keys.ACME.CacheDir != "d" || keys.ACME.DirectoryURL != "u" || keys.ACME.HTTPListen != "l" {
		t.Fatalf("keys: %+v", keys)
	}
}

// TestACMENew: what acme mode reads at New, without talking to any ACME server.
func TestACMENew(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCert(t, certOpts{cn: "test ca", isCA: true})
	caFile := writeFile(t, dir, "ca.pem", ca.certPEM)
	notPEM := writeFile(t, dir, "junk.pem", []byte("junk"))
	base := func(edit func(*ACMEConfig)) Config {
		c := DefaultConfig()
		c.Mode = ModeACME
		c.ACME.Hosts = []string{"gw.test"}
		c.ACME.CacheDir = filepath.Join(dir, "cache", "nested")
		c.ACME.DirectoryURL = "https://127.0.0.1:1/dir"
		if edit != nil {
			edit(&c.ACME)
		}
		return c
	}
	p, err := New(base(func(a *ACMEConfig) { a.CAFile = caFile }), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "cache", "nested")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir not created 0700: %v %v", fi, err)
	}
	tc := p.TLSConfig()
	if !p.Enabled() || tc.MinVersion != 0x0303 || strings.Join(tc.NextProtos, ",") != "h2,http/1.1,acme-tls/1" {
		t.Fatalf("acme TLS config: enabled %v, min %x, ALPN %q", p.Enabled(), tc.MinVersion, tc.NextProtos)
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(base(func(a *ACMEConfig) { a.CAFile = filepath.Join(dir, "nope.pem") }), nil); err == nil ||
		!strings.Contains(err.Error(), "acme.ca_file") {
		t.Fatalf("missing ca_file: %v", err)
	}
	if _, err := New(base(func(a *ACMEConfig) { a.CAFile = notPEM }), nil); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("junk ca_file: %v", err)
	}
	if _, err := New(base(func(a *ACMEConfig) { a.CacheDir = filepath.Join(notPEM, "sub") }), nil); err == nil ||
		!strings.Contains(err.Error(), "acme.cache_dir") {
		t.Fatalf("cache_dir under a file: %v", err)
	}
}

// TestHTTPHandler: the plain-HTTP listener's answers, request by request.
func TestHTTPHandler(t *testing.T) {
	dir := t.TempDir()
	cert := newTestCert(t, certOpts{cn: "x", dns: []string{"localhost"}})
	filesP, err := New(Config{Mode: ModeFiles, CertFile: writeFile(t, dir, "c.pem", cert.certPEM),
		KeyFile: writeFile(t, dir, "k.pem", cert.keyPEM)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	acmeCfg := DefaultConfig()
	acmeCfg.Mode, acmeCfg.ACME.Hosts, acmeCfg.ACME.CacheDir = ModeACME, []string{"gw.test"}, filepath.Join(dir, "cache")
	acmeP, err := New(acmeCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		p            *Provider
		method, url  string
		host         string
		wantCode     int
		wantLocation string
	}{
		{"files GET", filesP, "GET", "http://gw.test:8080/some/path?q=1", "", 308, "https://gw.test/some/path?q=1"},
		{"files POST keeps method (308)", filesP, "POST", "http://gw.test/api/x", "", 308, "https://gw.test/api/x"},
		{"escaped path kept", filesP, "GET", "http://gw.test/a%2Fb/c%20d?x=%26", "", 308, "https://gw.test/a%2Fb/c%20d?x=%26"},
		{"root", filesP, "GET", "http://gw.test", "", 308, "https://gw.test/"},
		{"IPv6 host", filesP, "GET", "http://[2001:db8::1]:80/p", "", 308, "https://[2001:db8::1]/p"},
		{"acme GET", acmeP, "GET", "http://gw.test/some/path?q=1", "", 308, "https://gw.test/some/path?q=1"},
		{"acme HEAD", acmeP, "HEAD", "http://gw.test:80/", "", 308, "https://gw.test/"},
		// A challenge for an allowed host with the port in Host: autocert alone would say 403.
		{"acme unknown token, host with port", acmeP, "GET", "http://gw.test:5002/.well-known/acme-challenge/nope", "", 404, ""},
		{"acme unknown token", acmeP, "GET", "http://gw.test/.well-known/acme-challenge/nope", "", 404, ""},
		{"acme challenge, other host", acmeP, "GET", "http://evil.test:80/.well-known/acme-challenge/nope", "", 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.url, nil)
			w := httptest.NewRecorder()
			tc.p.HTTPHandler().ServeHTTP(w, r)
			if w.Code != tc.wantCode || w.Header().Get("Location") != tc.wantLocation {
				t.Fatalf("%d Location %q, want %d %q (body %q)", w.Code, w.Header().Get("Location"), tc.wantCode,
					tc.wantLocation, w.Body.String())
			}
		})
	}
	// Off mode has no HTTPS to send anyone to.
	off, _ := New(DefaultConfig(), nil)
	w := httptest.NewRecorder()
	off.HTTPHandler().ServeHTTP(w, httptest.NewRequest("GET", "http://x/", nil))
	if w.Code != http.StatusNotFound {
		t.Fatalf("off: %d, want 404", w.Code)
	}
}
