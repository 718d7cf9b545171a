package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminMinWriteTimeout is the admin listener's floor on the write timeout. net/http/pprof
// refuses a profile or trace whose duration reaches the server's write timeout, and
// `go tool pprof` asks for 30 s by default, which the public listener's 30 s would refuse.
const adminMinWriteTimeout = 2 * time.Minute

// adminListen is the address of the admin listener: http.admin_listen, or the -pprof flag's
// (Validate makes them exclusive). Empty: no admin listener.
func (c Config) adminListen() string {
	if c.AdminListen != "" {
		return c.AdminListen
	}
	return c.DebugListen
}

// metricsOnPublic reports whether the public listener serves /metrics: only while no admin
// listener is configured in the file. The -pprof flag leaves the public /metrics in place.
func (c Config) metricsOnPublic() bool { return c.AdminListen == "" }

// metricsHandler serves the Prometheus registry of both planes.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.deps.Metrics, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// AdminHandler serves the operator endpoints: /healthz, /readyz, /metrics and net/http/pprof
// under /debug/pprof/. Its mux is its own: the pprof handlers are registered here explicitly,
// and nothing the gateway listens on serves http.DefaultServeMux (where importing
// net/http/pprof also registers them).
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.deps.Metrics != nil {
		mux.Handle("GET /metrics", s.metricsHandler())
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // the index and every named profile
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol) // go tool pprof posts addresses
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s.recoverer(mux)
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

// startAdmin binds the admin listener (a port conflict fails the start) and serves it, plain
// HTTP, on a context of its own derived from the plane's, so Stop can end profiles and traces
// in flight instead of waiting for them.
func (s *Server) startAdmin(ctx context.Context) error {
	addr := s.cfg.adminListen()
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http admin listen %s: %w", addr, err)
	}
	s.adminAddr = ln.Addr()
	ctx, s.adminCancel = context.WithCancel(ctx)
	t := s.cfg.Timeouts
	s.admin = &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      max(t.Write, adminMinWriteTimeout),
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	srv := s.admin
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http admin server stopped", "error", err)
		}
	})
	s.log.Info("http admin listener started", "listen", s.adminAddr.String(),
		"metrics_on_public_listener", s.cfg.metricsOnPublic())
	return nil
}

// AdminAddr is the bound admin listener address, nil when there is none.
func (s *Server) AdminAddr() net.Addr { return s.adminAddr }
