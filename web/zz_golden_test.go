package web

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/static"
)

func TestZZGolden(t *testing.T) {
	out := os.Getenv("GOLDEN_OUT")
	if out == "" {
		t.Skip()
	}
	var sb strings.Builder
	for _, tlsOff := range []bool{true} {
		_ = tlsOff
		for _, perIP := range []float64{0, 2} {
			cfg := Defaults()
			cfg.Listen = "127.0.0.1:0"
			cfg.JWT = testJWTConfig(t)
			cfg.RateLimit.PerIP = perIP
			cfg.RateLimit.Burst = 3
			reg := prometheus.NewRegistry()
			s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, slog.New(slog.DiscardHandler), reg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			base := "http://" + s.Addr().String()
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			etag := ""
			type rq struct {
				m, p string
				h    map[string]string
			}
			reqs := []rq{
				{"GET", "/admin/admin.js", nil},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "gzip"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "br, GZIP;q=0.5"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "gzip;q=0"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "gzip ; q=0"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "x-gzip"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "deflate,gzip"}},
				{"GET", "/admin/admin.js", map[string]string{"Accept-Encoding": "*"}},
				{"HEAD", "/admin/admin.js", nil},
				{"HEAD", "/admin/admin.js", map[string]string{"Accept-Encoding": "gzip"}},
				{"GET", "/admin/admin.js", map[string]string{"If-None-Match": "ETAG"}},
				{"GET", "/admin/admin.js", map[string]string{"If-None-Match": "W/ETAG, \"x\""}},
				{"GET", "/admin/admin.js", map[string]string{"If-None-Match": "\"nope\""}},
				{"GET", "/admin/admin.js", map[string]string{"If-None-Match": "*"}},
				{"GET", "/admin/admin.js", map[string]string{"If-None-Match": "ETAG", "Accept-Encoding": "gzip"}},
				{"GET", "/admin/", nil},
				{"GET", "/admin/", map[string]string{"Accept-Encoding": "gzip"}},
				{"GET", "/admin/index.html", nil},
				{"GET", "/admin/favicon.svg", map[string]string{"Accept-Encoding": "gzip"}},
				{"GET", "/admin/admin.css", map[string]string{"Accept-Encoding": "gzip"}},
				{"GET", "/admin/missing.js", nil},
				{"GET", "/admin/admin.js?x=1", nil},
				{"POST", "/admin/admin.js", nil},
				{"GET", "/admin", nil},
				{"GET", "/", nil},
				{"GET", "/healthz", nil},
				{"GET", "/readyz", nil},
				{"GET", "/nope", nil},
				{"GET", "/api/me", nil},
				{"GET", "/admin/admin.js", nil},
				{"GET", "/admin/admin.js", nil},
				{"GET", "/admin/admin.js", nil},
			}
			for _, q := range reqs {
				req, _ := http.NewRequest(q.m, base+q.p, nil)
				for k, v := range q.h {
					req.Header.Set(k, strings.ReplaceAll(v, "ETAG", etag))
				}
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if etag == "" {
					etag = res.Header.Get("ETag")
				}
				var keys []string
				for k := range res.Header {
					if k != "Date" {
						keys = append(keys, k)
					}
				}
				sort.Strings(keys)
				fmt.Fprintf(&sb, "perip=%v %s %s %v -> %d %s len=%d cl=%d sha=%x\n", perIP, q.m, q.p, q.h, res.StatusCode, res.Proto, len(body), res.ContentLength, sha256.Sum256(body))
				for _, k := range keys {
					fmt.Fprintf(&sb, "   %s: %q\n", k, res.Header[k])
				}
			}
			s.Stop(context.Background())
		}
	}
	os.WriteFile(out, []byte(sb.String()), 0o644)
}
