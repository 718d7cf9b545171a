package web

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzParseFastHead checks the fast lane's parser against net/http's: whatever it accepts,
// net/http reads as the same request (method, path, no body, the same header values) ending
// at the same byte, and net/http's server would accept too.
//
//	go test -run '^$' -fuzz FuzzParseFastHead -fuzztime 60s ./web
func FuzzParseFastHead(f *testing.F) {
	for _, s := range []string{
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /admin/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, br\r\nIf-None-Match: \"ab\"\r\n\r\nGET /",
		"GET /admin/admin.js?a=b%20c HTTP/1.1\r\nhost:  x \r\nX-Request-Id: r1\r\nConnection: keep-alive\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\nHost: x\n\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost : x\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET http://x/admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost: [::1]:80\r\nX: \xff\t\r\n\r\n",
		"GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET /admin/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /admin/admin.js#f HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, st := parseFastHead(b)
		if st != fastOK {
			if n != 0 {
				t.Fatalf("state %d with length %d", st, n)
			}
			return
		}
		if n < 4 || n > len(b) || string(b[n-4:n]) != "\r\n\r\n" {
			t.Fatalf("head length %d of %q", n, b)
		}
		// Bytes after the head do not change it.
		if h2, n2, st2 := parseFastHead(append(b[:n:n], "GARBAGE\n\x00"...)); st2 != fastOK || n2 != n || !bytes.Equal(h2.path, h.path) {
			t.Fatalf("with more bytes: %d %d", st2, n2)
		}
		br := bufio.NewReaderSize(bytes.NewReader(b), len(b)+16)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("net/http refuses %q: %v", b[:n], err)
		}
		if used := len(b) - br.Buffered(); used != n {
			t.Fatalf("net/http read %d bytes, the lane %d: %q", used, n, b)
		}
		method := http.MethodGet
		if h.head {
			method = http.MethodHead
		}
		if req.Method != method || req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.URL.Host != "" ||
			req.URL.Path != string(h.path) || req.URL.RawPath != "" || req.ContentLength != 0 ||
			len(req.TransferEncoding) != 0 || req.Close || req.Body != http.NoBody {
			t.Fatalf("net/http reads %q as %s %q (raw %q host %q) cl %d te %v close %v", b[:n], req.Method,
				req.URL.Path, req.URL.RawPath, req.URL.Host, req.ContentLength, req.TransferEncoding, req.Close)
		}
		// What http.Server checks after reading (conn.readRequest), on the header lines as
		// textproto reads them (ReadRequest takes Host out of the map).
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b[:n])))
		if _, err := tp.ReadLine(); err != nil {
			t.Fatal(err)
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			t.Fatalf("textproto refuses %q: %v", b[:n], err)
		}
		if hosts := hdr["Host"]; len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) || req.Host != hosts[0] {
			t.Fatalf("Host %q, %q", hosts, req.Host)
		}
		for k, vv := range hdr {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("header value %q", v)
				}
			}
		}
		for _, k := range []string{"Expect", "Upgrade", "Trailer", "Content-Length", "Transfer-Encoding"} {
			if _, ok := req.Header[k]; ok {
				t.Fatalf("%s passed", k)
			}
		}
		if v := req.Header["Connection"]; len(v) > 1 || len(v) == 1 && !strings.EqualFold(v[0], "keep-alive") {
			t.Fatalf("Connection %q", v)
		}
		// The values the lane uses, as the handler would see them.
		one := func(k string, has bool, v []byte) {
			vv, ok := req.Header[k]
			if ok != has || ok && (len(vv) != 1 || vv[0] != string(v)) {
				t.Fatalf("%s: net/http %q, lane %v %q", k, vv, has, v)
			}
		}
		if ae, ok := req.Header["Accept-Encoding"]; ok != h.hasAE || len(ae) > 1 {
			t.Fatalf("Accept-Encoding: net/http %q, lane %v", ae, h.hasAE)
		}
		one("If-None-Match", h.hasINM, h.inm)
		one("X-Request-Id", h.hasReqID, h.reqID)
		if acceptsGzip(req) != h.gzip {
			t.Fatalf("gzip: net/http %v, lane %v", acceptsGzip(req), h.gzip)
		}
	})
}
