package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// reqInfo is what the first middleware works out once per request for everything after it:
// the client address and the request ID.
type reqInfo struct {
	ip    netip.Addr
	class int    // ip's address class (clientIPs.class)
	id    string // the client's X-Request-Id, or "" for a generated one
	seq   uint64 // the generated ID's number
}

type reqInfoKey struct{}

// reqCtx is the request's context with its reqInfo: one allocation for both, where
// context.WithValue would take one per value plus the value itself.
type reqCtx struct {
	context.Context
	info reqInfo
}

func (c *reqCtx) Value(key any) any {
	if key == (reqInfoKey{}) {
		return &c.info
	}
	return c.Context.Value(key)
}

// Request IDs are chi's middleware.RequestID format: the client's X-Request-Id when it sends
// one, else host/random-NNNNNN with a process-wide counter. The string is only built when
// something logs it.
var (
	reqIDPrefix = newReqIDPrefix()
	reqIDSeq    atomic.Uint64
)

func newReqIDPrefix() string {
	host, err := os.Hostname()
	if host == "" || err != nil {
		host = "localhost"
	}
	var buf [12]byte
	var b64 string
	for len(b64) < 10 {
		_, _ = rand.Read(buf[:])
		b64 = strings.NewReplacer("+", "", "/", "").Replace(base64.StdEncoding.EncodeToString(buf[:]))
	}
	return host + "/" + b64[:10]
}

// withRequestInfo is the first middleware: request ID and client IP (X-Forwarded-For only
// from trusted proxies), stored for the handlers and logs downstream.
func withRequestInfo(ips clientIPs) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip := ips.of(r)
			c := &reqCtx{Context: r.Context(), info: reqInfo{ip: ip, class: ips.class(ip)}}
			if v := r.Header["X-Request-Id"]; len(v) > 0 && v[0] != "" {
				c.info.id = v[0]
			} else {
				c.info.seq = reqIDSeq.Add(1)
			}
			next.ServeHTTP(w, r.WithContext(c))
		})
	}
}

func infoOf(ctx context.Context) *reqInfo {
	i, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return i
}

// ClientIP is the request's client address as the trusted-proxy rules see it.
func ClientIP(r *http.Request) netip.Addr {
	if i := infoOf(r.Context()); i != nil {
		return i.ip
	}
	return netip.Addr{}
}

// clientOf is the request's client address and its address class (0, the default, outside
// the HTTP plane's chain).
func clientOf(r *http.Request) (netip.Addr, int) {
	if i := infoOf(r.Context()); i != nil {
		return i.ip, i.class
	}
	return netip.Addr{}, 0
}

// RequestID is the request's ID as its log lines carry it ("" outside the HTTP plane's chain).
func RequestID(ctx context.Context) string {
	i := infoOf(ctx)
	switch {
	case i == nil:
		return ""
	case i.id != "":
		return i.id
	}
	b := make([]byte, 0, len(reqIDPrefix)+8)
	b = append(b, reqIDPrefix...)
	b = append(b, '-')
	var num [20]byte
	n := strconv.AppendUint(num[:0], i.seq, 10)
	for range 6 - len(n) {
		b = append(b, '0')
	}
	return string(append(b, n...))
}
