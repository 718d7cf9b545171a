// Package tlsmode provides the HTTP plane's TLS, by mode:
//
//   - off: plain HTTP, for local development on loopback (the embedded default).
//   - files: a certificate and key from files, re-read without a restart when they change
//     (checked at most every few seconds, from the handshakes) or on Reload. A new pair that
//     does not load keeps the old one in service, and the log says why.
//   - acme: certificates from an ACME CA through golang.org/x/crypto/acme/autocert, for an
//     allowlist of hosts, cached on disk, validated by TLS-ALPN-01 on the HTTPS listener
//     and by HTTP-01 on the plain-HTTP listener (HTTPHandler), which otherwise redirects to
//     HTTPS.
//
// Every TLS mode allows TLS 1.2 and 1.3 only, with ECDHE and AEAD cipher suites for 1.2,
// and offers HTTP/2 by ALPN.
package tlsmode

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/crypto/acme/autocert"
)

// Provider serves the certificates of one mode. Build it with New.
type Provider struct {
	mode  string
	log   *slog.Logger
	tls   *tls.Config       // nil when off
	files *fileCert         // files mode
	acme  *autocert.Manager // acme mode

	httpOnce sync.Once
	http     http.Handler
}

// New builds the provider of cfg's mode. It validates cfg, and reads what the mode needs
// now: files mode loads the pair (a pair that does not load is an error), acme mode creates
// the cache directory and reads the CA file. A nil log discards.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg = cfg.withDefaults()
	p := &Provider{mode: cfg.Mode, log: log}
	switch cfg.Mode {
	case ModeFiles:
		f, err := newFileCert(cfg.CertFile, cfg.KeyFile, log)
		if err != nil {
			return nil, err
		}
		p.files = f
		p.tls = baseTLSConfig()
		p.tls.GetCertificate = f.getCertificate
	case ModeACME:
		m, err := newACMEManager(cfg.ACME, log)
		if err != nil {
			return nil, err
		}
		p.acme = m
		p.tls = acmeTLSConfig(m, cfg.ACME.Hosts, log)
	}
	return p, nil
}

// Enabled reports whether the HTTP plane serves TLS (false when off).
func (p *Provider) Enabled() bool { return p.tls != nil }

// TLSConfig is the server side configuration for the HTTPS listener, nil when off. Each
// call returns a fresh copy sharing the certificate source.
func (p *Provider) TLSConfig() *tls.Config {
	if p.tls == nil {
		return nil
	}
	return p.tls.Clone()
}

// HTTPHandler is what the plain-HTTP listener (acme.http_listen) serves: in acme mode the
// ACME HTTP-01 challenges, and everything else redirected (308) to https:// of the same host
// (default port) and path. In files mode it only redirects. When off, there is no HTTPS to
// send anyone to, and it answers 404.
//
// In acme mode, calling it also enables the HTTP-01 challenge: autocert tries TLS-ALPN-01
// first and falls back to HTTP-01 only once a plain-HTTP listener can answer.
func (p *Provider) HTTPHandler() http.Handler {
	p.httpOnce.Do(func() {
		switch p.mode {
		case ModeFiles:
			p.http = http.HandlerFunc(redirectHTTPS)
		case ModeACME:
			p.http = acmeHTTPHandler(p.acme)
		default:
			p.http = http.NotFoundHandler()
		}
	})
	return p.http
}

// Reload re-reads the certificate files now (files mode). A pair that does not load is
// logged and returned, and the current one stays in service. In the other modes it does
// nothing.
func (p *Provider) Reload() error {
	if p.files == nil {
		return nil
	}
	return p.files.reload()
}

// baseTLSConfig is the protocol policy of every TLS mode.
func baseTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2 only: forward secret key exchange and AEAD ciphers. TLS 1.3 suites are
		// all of that already and are not configurable.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// redirectHTTPS answers 308 to https:// of the same host, on the default port, with the
// same path and query. 308 keeps the method and body.
func redirectHTTPS(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		http.Error(w, "missing Host header", http.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	target := url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if target.Path == "" {
		target.Path = "/"
	}
	http.Redirect(w, r, target.String(), http.StatusPermanentRedirect)
}
