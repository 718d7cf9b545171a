package web

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/internal/tlsadmit"
)

// TLS handshake admission (issue 5): the HTTPS listener is a tlsadmit.Listener over the
// per-IP connection cap. tls.NewListener would hand net/http a *tls.Conn per accepted socket
// and net/http would run every handshake at once, each with a deadline counted from accept;
// a reconnect storm then times out the oldest. With admission, handshakes run on a bounded
// number of workers in arrival order, each with a deadline from its own start, and net/http
// sees only connections whose handshake is done, so its own HandshakeContext is a no-op
// (ALPN, h2 included, is already negotiated). The mechanism and its default sizes are in
// internal/tlsadmit.

// resolveHandshakes fills the defaults of c from the server's timeouts: a handshake gets
// net/http's own handshake budget, min(read_header, read, write), now from its start instead
// of from accept; a connection may wait three of those for a worker. Browsers give a whole
// WebSocket opening (TCP, TLS, upgrade) 20 s (Firefox's network.websocket.timeout.open) or
// more, so with the 5 s default a connection that waited 15 s and then handshakes still has
// a chance, and one that waited longer would mostly have been given up by its client.
func resolveHandshakes(c HandshakeConfig, t TimeoutConfig) tlsadmit.Config {
	return tlsadmit.Config{Concurrency: c.Concurrency, Queue: c.Queue, QueueWait: c.QueueWait,
		Timeout: min(t.ReadHeader, t.Read, t.Write)}.WithDefaults()
}

// newHandshakeMetrics builds the admission's series: gateway_http_tls_*.
func newHandshakeMetrics(reg prometheus.Registerer) *tlsadmit.Metrics {
	return tlsadmit.NewMetrics(reg, tlsadmit.MetricsOpts{Namespace: "gateway", Subsystem: "http",
		Conns: "HTTPS", ExtraFailures: []string{"plain_http"}})
}

// handshakeHooks let tests watch the workers. Both are called on the worker's goroutine,
// around the handshake.
type handshakeHooks struct {
	start func(c net.Conn)
	end   func(c net.Conn, err error)
}

func newHandshakeListener(inner net.Listener, cfg *tls.Config, hc tlsadmit.Config, m *tlsadmit.Metrics, hooks handshakeHooks) *tlsadmit.Listener {
	return tlsadmit.NewListener(inner, cfg, hc, tlsadmit.Options{Metrics: m,
		Hooks: tlsadmit.Hooks{Start: hooks.start, End: hooks.end}, Classify: classifyPlainHTTP})
}

// classifyPlainHTTP names a handshake that met a plain HTTP request, and answers it with the
// 400 net/http would have written had it run the handshake.
func classifyPlainHTTP(err error, c net.Conn) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader) {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		return "plain_http"
	}
	return ""
}

// looksLikeHTTP is net/http's test for a plain HTTP request on a TLS port.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
