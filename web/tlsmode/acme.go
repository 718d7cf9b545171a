package tlsmode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

// acmeRequestTimeout bounds one HTTP exchange with the ACME server. autocert bounds a whole
// issuance (5 minutes).
const acmeRequestTimeout = 30 * time.Second

const challengePrefix = "/.well-known/acme-challenge/"

func newACMEManager(c ACMEConfig, log *slog.Logger) (*autocert.Manager, error) {
	if err := os.MkdirAll(c.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme.cache_dir: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("acme.ca_file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      loggingCache{autocert.DirCache(c.CacheDir), log},
		HostPolicy: autocert.HostWhitelist(c.Hosts...),
		Email:      c.Email,
		Client: &acme.Client{
			DirectoryURL: c.DirectoryURL,
			HTTPClient:   &http.Client{Transport: transport, Timeout: acmeRequestTimeout},
			UserAgent:    "dualgate",
		},
	}
	log.Info("acme mode", "hosts", c.Hosts, "directory_url", c.DirectoryURL, "cache_dir", c.CacheDir)
	return m, nil
}

// acmeTLSConfig is the protocol policy with autocert's certificates. autocert's own
// TLSConfig adds acme-tls/1 to the protocols, for TLS-ALPN-01. A handshake without SNI (a
// client that dialled an IP address) gets the first host's certificate instead of failing.
func acmeTLSConfig(m *autocert.Manager, hosts []string, log *slog.Logger) *tls.Config {
	allowed := map[string]bool{}
	for _, h := range hosts {
		if n, err := idna.Lookup.ToASCII(h); err == nil {
			allowed[strings.TrimSuffix(n, ".")] = true
		}
	}
	first, _ := idna.Lookup.ToASCII(hosts[0])
	cfg := baseTLSConfig()
	cfg.NextProtos = m.TLSConfig().NextProtos
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.ServerName == "" {
			h := *hello
			h.ServerName = first
			hello = &h
		}
		cert, err := m.GetCertificate(hello)
		if err != nil {
			name, _ := idna.Lookup.ToASCII(hello.ServerName)
			if allowed[strings.TrimSuffix(name, ".")] && !isALPNChallenge(hello) {
				// One of ours and no certificate: issuance or the cache is failing.
				log.Warn("acme certificate unavailable", "host", hello.ServerName, "error", err)
			} else {
				// Scanners, wrong names, or a validation handshake of another instance.
				log.Debug("tls handshake refused", "server_name", hello.ServerName, "error", err)
			}
		}
		return cert, err
	}
	return cfg
}

func isALPNChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// acmeHTTPHandler answers HTTP-01 challenges and redirects everything else.
func acmeHTTPHandler(m *autocert.Manager) http.Handler {
	h := m.HTTPHandler(http.HandlerFunc(redirectHTTPS))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// autocert checks the host policy against r.Host, port included, so the
		// validation request for "gw.test:80" would fail HostWhitelist("gw.test") with 403.
		if strings.HasPrefix(r.URL.Path, challengePrefix) {
			if host, _, err := net.SplitHostPort(r.Host); err == nil {
				r = r.WithContext(r.Context()) // a shallow copy, to leave the caller's request alone
				r.Host = host
			}
		}
		h.ServeHTTP(w, r)
	})
}

// loggingCache logs what autocert stores: the account key once, then every certificate
// obtained or renewed.
type loggingCache struct {
	autocert.Cache
	log *slog.Logger
}

func (c loggingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	switch {
	case err != nil:
		c.log.Error("acme cache write failed", "key", key, "error", err)
	case key == "acme_account+key":
		c.log.Info("acme account key created")
	case strings.HasSuffix(key, "+token") || strings.HasSuffix(key, "+http-01"):
		c.log.Debug("acme challenge stored", "key", key)
	default:
		c.log.Info("acme certificate stored", "host", strings.TrimSuffix(key, "+rsa"), "rsa", strings.HasSuffix(key, "+rsa"))
	}
	return err
}
