package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fetch GETs url and returns the status and body.
func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func TestAdminListenerTakesMetricsAndPprof(t *testing.T) {
	s := startServer(t, func(c *Config) { c.AdminListen = "127.0.0.1:0" }, Deps{Ready: readiness{}})
	if s.AdminAddr() == nil {
		t.Fatal("no admin listener")
	}
	public, admin := "http://"+s.Addr().String(), "http://"+s.AdminAddr().String()

	// Health for load balancers stays public, and is on the admin listener too.
	for _, base := range []string{public, admin} {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := fetch(t, base+path); code != 200 || !strings.Contains(body, `"status"`) {
				t.Errorf("%s%s = %d %s", base, path, code, body)
			}
		}
	}
	// Metrics and pprof are on the admin listener only.
	if code, _ := fetch(t, public+"/metrics"); code != 404 {
		t.Errorf("public /metrics = %d, want 404 when http.admin_listen is set", code)
	}
	code, body := fetch(t, admin+"/metrics")
	if code != 200 || !strings.Contains(body, `gateway_http_requests_total{code="200",route="/healthz"}`) {
		t.Errorf("admin /metrics = %d, without the public requests' series:\n%.500s", code, body)
	}
	if code, body := fetch(t, admin+"/debug/pprof/"); code != 200 || !strings.Contains(body, "Types of profiles available") {
		t.Errorf("admin pprof index = %d %.200s", code, body)
	}
	if code, body := fetch(t, admin+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("admin goroutine profile = %d %.200s", code, body)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := fetch(t, public+path); code != 404 {
			t.Errorf("public %s = %d, want 404", path, code)
		}
	}
	// The admin listener is only the operator endpoints.
	for _, path := range []string{"/api/me", "/admin/", "/ws"} {
		if code, _ := fetch(t, admin+path); code != 404 {
			t.Errorf("admin %s = %d, want 404", path, code)
		}
	}
}

func TestAdminListenerReadinessFollowsTheGateway(t *testing.T) {
	s := startServer(t, func(c *Config) { c.AdminListen = "127.0.0.1:0" }, Deps{Ready: readiness{errors.New("stopping")}})
	for _, base := range []string{"http://" + s.Addr().String(), "http://" + s.AdminAddr().String()} {
		if code, body := fetch(t, base+"/readyz"); code != 503 || !strings.Contains(body, "stopping") {
			t.Errorf("%s/readyz while not ready = %d %s", base, code, body)
		}
		if code, _ := fetch(t, base+"/healthz"); code != 200 {
			t.Errorf("%s/healthz while not ready = %d", base, code)
		}
	}
}

func TestWithoutAdminListener(t *testing.T) {
	// The package imports net/http/pprof, which registers on http.DefaultServeMux; nothing of
	// that may reach the public listener.
	s := startServer(t, nil, Deps{})
	if s.AdminAddr() != nil {
		t.Fatalf("admin listener %v without http.admin_listen", s.AdminAddr())
	}
	public := "http://" + s.Addr().String()
	fetch(t, public+"/healthz")
	if code, body := fetch(t, public+"/metrics"); code != 200 || !strings.Contains(body, "gateway_http_") {
		t.Errorf("public /metrics without an admin listener = %d", code)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine"} {
		if code, _ := fetch(t, public+path); code != 404 {
			t.Errorf("public %s = %d, want 404", path, code)
		}
	}
}

func TestDebugListenKeepsPublicMetrics(t *testing.T) {
	// -pprof: the admin endpoints on one more address, /metrics staying public (the benches
	// read it there).
	s := startServer(t, func(c *Config) { c.DebugListen = "127.0.0.1:0" }, Deps{})
	public, debug := "http://"+s.Addr().String(), "http://"+s.AdminAddr().String()
	if code, _ := fetch(t, public+"/metrics"); code != 200 {
		t.Errorf("public /metrics with -pprof = %d", code)
	}
	if code, _ := fetch(t, debug+"/metrics"); code != 200 {
		t.Errorf("-pprof /metrics = %d", code)
	}
	if code, body := fetch(t, debug+"/debug/pprof/"); code != 200 || !strings.Contains(body, "Types of profiles available") {
		t.Errorf("-pprof index = %d", code)
	}
	if code, _ := fetch(t, public+"/debug/pprof/"); code != 404 {
		t.Errorf("public pprof with -pprof = %d, want 404", code)
	}
}

func TestAdminListenConflictFailsTheStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.JWT = testJWTConfig(t)
	cfg.AdminListen = taken.Addr().String()
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Metrics: reg}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	if err == nil {
		_ = s.Stop(context.Background())
		t.Fatal("started with the admin address taken")
	}
	if !strings.Contains(err.Error(), "http admin listen "+cfg.AdminListen) {
		t.Errorf("error = %v", err)
	}
	// The public listener that had started is closed again.
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Error("the public listener still accepts after the failed start")
	}
}

func TestStopEndsAProfileInFlight(t *testing.T) {
	// A long CPU profile must not hold the graceful stop until the shutdown budget runs out:
	// Stop cancels the admin listener's context, the profile ends with what it has, and the
	// shutdown is clean.
	cfg := Defaults()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.JWT = testJWTConfig(t)
	cfg.Timeouts.Shutdown = 5 * time.Minute
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Metrics: reg}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + s.AdminAddr().String() + "/debug/pprof/profile?seconds=100")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- result{res.StatusCode, string(b), err}
	}()
	// Wait until the handler is profiling (its goroutine sits in pprof's sleep).
	for !strings.Contains(goroutines(), "net/http/pprof.sleep") {
		select {
		case r := <-done:
			t.Fatalf("the profile request ended early: %d %v %.200s", r.code, r.err, r.body)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Errorf("stop with a profile in flight: %v", err)
	}
	r := <-done
	if r.err != nil || r.code != 200 || r.body == "" {
		t.Errorf("the profile in flight got %d %v (%d bytes), want 200 with the profile so far", r.code, r.err, len(r.body))
	}
}

func goroutines() string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

func TestAdminListenValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		wants []string
	}{
		{"no port", func(c *Config) { c.AdminListen = "127.0.0.1" }, []string{`http.admin_listen "127.0.0.1"`, "missing port", "want host:port"}},
		{"named port", func(c *Config) { c.AdminListen = "127.0.0.1:http" }, []string{`http.admin_listen "127.0.0.1:http"`, "not a number"}},
		{"port out of range", func(c *Config) { c.AdminListen = "127.0.0.1:70000" }, []string{"http.admin_listen", "not a number from 0 to 65535"}},
		{"bad host", func(c *Config) { c.AdminListen = "not a host:9090" }, []string{"http.admin_listen", "neither an IP address nor a host name"}},
		{"same as listen", func(c *Config) { c.AdminListen = c.Listen }, []string{"http.admin_listen", "same address as http.listen"}},
		{"both admin and -pprof", func(c *Config) { c.AdminListen, c.DebugListen = "127.0.0.1:9090", "127.0.0.1:6060" }, []string{"-pprof", "already serves pprof"}},
		{"bad -pprof", func(c *Config) { c.DebugListen = "6060" }, []string{`-pprof "6060"`, "missing port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.JWT = testJWTConfig(t)
			tc.edit(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	for _, ok := range []string{"", "127.0.0.1:9090", "[::1]:9090", "localhost:9090", ":9090", "10.0.0.5:0", "admin.internal:9090"} {
		c := Defaults()
		c.JWT = testJWTConfig(t)
		c.AdminListen = ok
		if err := c.Validate(); err != nil {
			t.Errorf("admin_listen %q refused: %v", ok, err)
		}
	}
}
