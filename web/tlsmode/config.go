package tlsmode

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"

	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

// The modes of `http.tls.mode`.
const (
	ModeOff   = "off"   // plain HTTP, for local development on loopback
	ModeFiles = "files" // certificate and key files, reloaded when they change
	ModeACME  = "acme"  // certificates from an ACME CA (Let's Encrypt) via autocert
)

// Config is the `http.tls` section of the gateway config.
type Config struct {
	// Mode is off (the default, plain HTTP), files or acme. Empty means off.
	Mode string `yaml:"mode"`
	// CertFile and KeyFile are the PEM certificate chain (leaf first) and private key of
	// files mode. They may name the same file. Changes are picked up without a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME configures acme mode.
	ACME ACMEConfig `yaml:"acme"`
}

// ACMEConfig configures acme mode.
type ACMEConfig struct {
	// Hosts are the DNS names certificates may be obtained for (the allowlist). Required.
	Hosts []string `yaml:"hosts"`
	// CacheDir keeps the account key and the certificates across restarts. Default "acme-cache".
	CacheDir string `yaml:"cache_dir"`
	// DirectoryURL is the ACME server's directory. Default Let's Encrypt production.
	DirectoryURL string `yaml:"directory_url"`
	// Email is the optional contact address registered with the account.
	Email string `yaml:"email"`
	// HTTPListen is the plain-HTTP listener for HTTP-01 challenges and the redirect to
	// HTTPS. Default ":80".
	HTTPListen string `yaml:"http_listen"`
	// CAFile is an optional PEM bundle of extra roots trusted when talking to the ACME
	// server (a test CA such as Pebble). Real deployments leave it empty.
	CAFile string `yaml:"ca_file"`
}

// Defaults for the ACME settings.
const (
	DefaultCacheDir   = "acme-cache"
	DefaultHTTPListen = ":80"
)

// DefaultConfig is the embedded default: TLS off, and the ACME defaults filled in.
func DefaultConfig() Config {
	return Config{
		Mode: ModeOff,
		ACME: ACMEConfig{
			CacheDir:     DefaultCacheDir,
			DirectoryURL: autocert.DefaultACMEDirectory,
			HTTPListen:   DefaultHTTPListen,
		},
	}
}

// withDefaults fills the settings left empty (a config built by hand, or `cache_dir: ""`).
func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeOff
	}
	if c.ACME.CacheDir == "" {
		c.ACME.CacheDir = DefaultCacheDir
	}
	if c.ACME.DirectoryURL == "" {
		c.ACME.DirectoryURL = autocert.DefaultACMEDirectory
	}
	if c.ACME.HTTPListen == "" {
		c.ACME.HTTPListen = DefaultHTTPListen
	}
	return c
}

// Validate reports every problem at once. Each error names its key relative to the
// section (`cert_file`, `acme.hosts[1]`, ...). It does not touch the file system: New
// reads the files and reports what is wrong with them.
func (c Config) Validate() []error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch c.Mode {
	case ModeOff:
		// Settings that only make sense with TLS are almost surely a forgotten `mode`:
		// refuse them rather than serve plain HTTP silently.
		if c.CertFile != "" || c.KeyFile != "" {
			add("mode: is off (plain HTTP) but cert_file/key_file are set; set mode: files")
		}
		if len(c.ACME.Hosts) > 0 {
			add("mode: is off (plain HTTP) but acme.hosts is set; set mode: acme")
		}
	case ModeFiles:
		if c.CertFile == "" {
			add("cert_file: required in files mode")
		}
		if c.KeyFile == "" {
			add("key_file: required in files mode")
		}
	case ModeACME:
		errs = append(errs, c.ACME.validate()...)
	default:
		add("mode: unknown %q (want %s, %s or %s)", c.Mode, ModeOff, ModeFiles, ModeACME)
	}
	return errs
}

func (a ACMEConfig) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(a.Hosts) == 0 {
		add("acme.hosts: at least one host name is required in acme mode")
	}
	seen := map[string]bool{}
	for i, h := range a.Hosts {
		name, err := checkHost(h)
		if err != nil {
			add("acme.hosts[%d] %q: %w", i, h, err)
			continue
		}
		if seen[name] {
			add("acme.hosts[%d] %q: listed twice", i, h)
		}
		seen[name] = true
	}
	if u, err := url.Parse(a.DirectoryURL); err != nil {
		add("acme.directory_url: %w", err)
	} else if u.Scheme != "https" || u.Host == "" {
		add("acme.directory_url %q: must be an https:// URL (ACME runs over HTTPS only)", a.DirectoryURL)
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			add("acme.email %q: must be a bare address such as ops@example.com", a.Email)
		}
	}
	if _, port, err := net.SplitHostPort(a.HTTPListen); err != nil || port == "" {
		add("acme.http_listen %q: must be host:port (\":80\" for all addresses)", a.HTTPListen)
	}
	return errs
}

// checkHost returns the normalised (ASCII, lower-case) form of an allowlist entry, or why
// autocert could never get a certificate for it.
func checkHost(h string) (string, error) {
	switch {
	case h == "":
		return "", errors.New("empty host name")
	case strings.Contains(h, "/"):
		return "", errors.New("must be a bare host name, without scheme or path")
	case strings.HasPrefix(h, "*"):
		return "", errors.New("wildcard names need the DNS-01 challenge, which acme mode does not do")
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return "", errors.New("IP addresses are not supported, use a DNS name")
	}
	if strings.Contains(h, ":") {
		return "", errors.New("must be a bare host name, without port")
	}
	name, err := idna.Lookup.ToASCII(h)
	if err != nil {
		return "", fmt.Errorf("not a valid host name: %w", err)
	}
	if !strings.Contains(strings.Trim(name, "."), ".") {
		return "", errors.New("needs at least two labels (autocert refuses names such as localhost)")
	}
	return name, nil
}
