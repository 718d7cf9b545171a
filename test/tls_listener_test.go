package test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTLSListenerMutualAuth: a tls: listener with sip.tls.client_ca_file takes only clients
// whose certificate that CA signed (trunks with mutual TLS), and only TLS 1.2 and up.
func TestTLSListenerMutualAuth(t *testing.T) {
	gwPort, tlsPort, backend := freePort(t), freePort(t), freePort(t)
	server, serverCert, _ := baresipSelfSigned(t, "gateway", "127.0.0.1")
	_, trunkCA, trunkCert := baresipSelfSigned(t, "trunk")
	_, _, strangerCert := baresipSelfSigned(t, "stranger")
	cfg := strings.Replace(edgeConfig(t, backend, fmt.Sprintf("  tls: {cert_file: %q, key_file: %q, client_ca_file: %q}", server, server, trunkCA)),
		`listen: ["udp:127.0.0.1:%PORT%", "tcp:127.0.0.1:%PORT%"]`,
		fmt.Sprintf(`listen: ["udp:127.0.0.1:%%PORT%%", "tcp:127.0.0.1:%%PORT%%", "tls:127.0.0.1:%d"]`, tlsPort), 1)
	startGateway(t, gwPort, cfg)

	pemBytes, err := os.ReadFile(serverCert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	options := func(conf *tls.Config) (string, error) {
		conf.RootCAs = roots
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort), conf)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		la := c.LocalAddr().String()
		req := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK-tls%d\r\n"+
			"From: <sip:trunk@%s>;tag=t1\r\nTo: <sip:127.0.0.1:%d>\r\nCall-ID: tls-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			tlsPort, la, time.Now().UnixNano(), la, tlsPort, time.Now().UnixNano())
		if _, err := c.Write([]byte(req)); err != nil {
			return "", err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}

	if got, err := options(&tls.Config{Certificates: []tls.Certificate{trunkCert}}); err != nil || got != "SIP/2.0 200 OK" {
		t.Fatalf("trunk with its certificate: %q, %v", got, err)
	}
	for name, conf := range map[string]*tls.Config{
		"no client certificate":           {},
		"certificate from another CA":     {Certificates: []tls.Certificate{strangerCert}},
		"TLS 1.1 with a good certificate": {Certificates: []tls.Certificate{trunkCert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
	} {
		got, err := options(conf)
		if err == nil {
			t.Errorf("%s: got %q, want the handshake refused", name, got)
			continue
		}
		t.Logf("%s: %v", name, err)
		if strings.Contains(err.Error(), "no supported versions") {
			t.Errorf("%s: the client refused by itself (%v), the server was not tested", name, err)
		}
	}
}
