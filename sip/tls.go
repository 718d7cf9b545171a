package sip

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// serverTLS builds the TLS listeners' configuration: TLS 1.2 and up with Go's default (modern)
// cipher suites, the certificate re-read when its file changes (certificates are renewed
// without a restart), and client certificates required when a CA for them is configured.
func serverTLS(c TLSConfig) (*tls.Config, error) {
	cl := &certLoader{certFile: c.CertFile, keyFile: c.KeyFile}
	if _, err := cl.get(); err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cl.get()
		},
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("sip.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sip.tls.client_ca_file %s: no certificate in it", c.ClientCAFile)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// certLoader reloads a certificate pair when the certificate file's modification time changes,
// checked at most once a second.
type certLoader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	mod               time.Time
	checked           time.Time
}

func (l *certLoader) get() (*tls.Certificate, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.cert != nil && now.Sub(l.checked) < time.Second {
		return l.cert, nil
	}
	l.checked = now
	st, err := os.Stat(l.certFile)
	if err != nil {
		if l.cert != nil {
			return l.cert, nil // keep serving the last good one
		}
		return nil, fmt.Errorf("sip.tls.cert_file: %w", err)
	}
	if l.cert != nil && st.ModTime().Equal(l.mod) {
		return l.cert, nil
	}
	c, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		if l.cert != nil {
			return l.cert, nil
		}
		return nil, fmt.Errorf("sip.tls: load certificate: %w", err)
	}
	l.cert, l.mod = &c, st.ModTime()
	return l.cert, nil
}

// clientTLS is how the router dials backends over TLS: TLS 1.2 and up, verified against
// sip.tls.ca_file or the system roots.
func clientTLS(c TLSConfig) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("sip.tls.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("sip.tls.ca_file %s: no certificate in it", c.CAFile)
	}
	conf.RootCAs = pool
	return conf, nil
}
