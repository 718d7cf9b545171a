package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/internal/tlsadmit"
	"github.com/dualgate/dualgate/web/auth"
	"github.com/dualgate/dualgate/web/tlsmode"
)

// Readiness reports whether the gateway can take traffic (planes started, not draining).
type Readiness interface {
	Ready() error
}

// Deps is what the HTTP plane needs from the rest of the gateway.
type Deps struct {
	Admin    Admin
	Accounts Accounts // nil: no embedded login
	Ready    Readiness
	Metrics  prometheus.Gatherer
	Static   fs.FS        // the portals: admin/, agent/ and common/ (what both load); nil: none
	Agents   AgentSockets // the bridge for /ws; nil: no WebSocket SIP
}

// Server is the HTTP plane.
type Server struct {
	cfg      Config
	log      *slog.Logger
	deps     Deps
	m        *metrics
	ips      clientIPs
	tls      *tlsmode.Provider
	verifier *auth.Verifier
	signer   *auth.Signer // nil when tokens come only from an external identity provider
	guard    *loginGuard
	static   *staticFiles
	limitAll *ipLimiter
	limitLog *ipLimiter
	limitRef *ipLimiter
	ws       *wsGate
	ended    *endedSessions

	srv      *http.Server
	redirect *http.Server // ACME HTTP-01 and the redirect to HTTPS, in acme mode
	admin    *http.Server // http.admin_listen (or -pprof): metrics, health, pprof; nil when unset
	addr     net.Addr
	wg       sync.WaitGroup
	life     context.Context // ends when the server stops: agent sockets live in it
	cancel   context.CancelFunc

	adminAddr   net.Addr
	adminCancel context.CancelFunc

	fast *fastLane // plain HTTP only; nil when off

	hsMetrics *tlsadmit.Metrics  // the HTTPS listener's handshake admission; nil when TLS is off
	hsHooks   handshakeHooks     // tests watch the handshake workers
	hs        *tlsadmit.Listener // nil when TLS is off
}

// New builds the HTTP plane from a validated config. Nothing listens until Start.
func New(ctx context.Context, cfg Config, deps Deps, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	trusted, _ := parsePrefixes(cfg.TrustedProxies)
	ips := newClientIPs(trusted, cfg.RateLimit)
	s := &Server{cfg: cfg, log: log, deps: deps, m: newMetrics(reg), ips: ips, life: context.Background(),
		limitAll: newIPLimiter("all", ips.classes, func(c RateLimitConfig) (float64, int) { return c.PerIP, c.Burst }),
		limitLog: newIPLimiter("login", ips.classes, func(c RateLimitConfig) (float64, int) { return perMinute(c.LoginPerMinute) }),
		limitRef: newIPLimiter("refresh", ips.classes, func(c RateLimitConfig) (float64, int) { return perMinute(c.RefreshPerMinute) }),
		ended:    newEndedSessions(),
		ws:       newWSGate(ips.classes, cfg.RateLimit.WSPerUser),
	}

	var err error
	if cfg.JWT, err = cfg.JWT.WithEphemeralSecret(); err != nil {
		return nil, fmt.Errorf("http jwt: %w", err)
	}
	if cfg.JWT.EphemeralSecret {
		log.Warn("http.jwt.ephemeral_secret: tokens are signed with a random secret that dies with this process; development only")
	}
	s.cfg = cfg
	if s.tls, err = tlsmode.New(cfg.TLS, log); err != nil {
		return nil, fmt.Errorf("http tls: %w", err)
	}
	if s.tls.Enabled() {
		s.hsMetrics = newHandshakeMetrics(reg)
	}
	if s.verifier, err = auth.NewVerifier(ctx, cfg.JWT, log); err != nil {
		return nil, fmt.Errorf("http jwt: %w", err)
	}
	if deps.Accounts != nil {
		if s.signer, err = auth.NewSigner(cfg.JWT); err != nil {
			log.Warn("embedded login disabled", "reason", err.Error())
		}
	}
	s.guard = newLoginGuard()
	if s.static, err = newStaticFiles(deps.Static); err != nil {
		return nil, err
	}
	return s, nil
}

// Handler is the whole HTTP plane as one handler (the server serves it; tests may too).
func (s *Server) Handler() http.Handler { return s.staticFastPath(s.router()) }

// router is every route, with the middleware chain.
func (s *Server) router() *chi.Mux {
	r := chi.NewRouter()
	r.Use(s.middleware("")...)

	r.Get("/healthz", healthz)
	r.Get("/readyz", s.readyz)
	if s.deps.Metrics != nil && s.cfg.metricsOnPublic() { // else only on the admin listener
		r.Handle("/metrics", s.metricsHandler())
	}
	r.With(s.limitMiddleware(s.limitLog)).Post("/api/login", s.login)
	r.Post("/api/logout", s.logout)
	r.With(s.limitMiddleware(s.limitRef), s.authenticated, s.sameOrigin).Post("/api/refresh", s.refresh)
	r.With(s.authenticated).Get("/api/me", s.me)
	r.With(s.limitMiddleware(s.ws.limit), s.authenticated).Get("/ws", s.serveWS)
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/admin/", http.StatusFound) })
	r.Get("/admin", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusMovedPermanently)
	})
	r.Handle(staticRoute, s.static)
	r.Handle(commonRoute, s.static) // the files both portals load
	r.Get("/agent", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/agent/", http.StatusMovedPermanently)
	})
	r.Handle(agentRoute, s.static) // the agent softphone; served by chi, not the fast path
	r.Route("/api/admin", func(r chi.Router) {
		r.Use(s.authenticated, auth.RequireRole("admin"), s.sameOrigin)
		s.adminRoutes(r)
	})
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) { writeJSONError(w, http.StatusNotFound, "not found") })
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

// middleware is the chain every request goes through, in order. route names the route for
// the access log and metrics when the request does not go through chi (else chi's pattern).
func (s *Server) middleware(route string) chi.Middlewares {
	return chi.Middlewares{withRequestInfo(s.ips), s.accessLog(route), s.recoverer, s.securityHeaders,
		s.limitMiddleware(s.limitAll)}
}

const (
	staticRoute = "/admin/*"
	commonRoute = "/common/*"
	agentRoute  = "/agent/*"
)

// fastRoutes are the static routes whose files staticFastPath and the fast lane answer without
// chi: the admin portal and the files both portals share. The agent portal stays with chi.
var fastRoutes = []string{staticRoute, commonRoute}

// staticFastPath sends GET and HEAD requests for the embedded files straight to the static
// handler, through the same middleware, skipping chi: for these requests chi's routing
// context and the "*" path value cost more than the rest of the chain. It only takes the paths
// that chi itself routes to one of fastRoutes, checked here against the built router, so a
// route added later cannot be shadowed; each keeps its route's name in the log and metrics.
// Everything else goes to chi.
func (s *Server) staticFastPath(mux *chi.Mux) http.Handler {
	paths := s.staticPaths(mux)
	if len(paths) == 0 {
		return mux
	}
	byRoute := map[string]http.Handler{}
	byPath := make(map[string]http.Handler, len(paths))
	for p, route := range paths {
		if byRoute[route] == nil {
			byRoute[route] = s.middleware(route).Handler(s.static)
		}
		byPath[p] = byRoute[route]
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// chi routes on RawPath when it is set; those requests take the long way.
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if h := byPath[r.URL.Path]; h != nil && r.URL.RawPath == "" {
				h.ServeHTTP(w, r)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Ready != nil {
		if err := s.deps.Ready.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Start binds the listener (so a port conflict fails the start) and serves it.
func (s *Server) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.life = ctx
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", s.cfg.Listen, err)
	}
	s.addr = ln.Addr()
	ln = newConnLimitListener(ln, s.ips, !s.tls.Enabled(),
		func(class string) { s.m.limited.WithLabelValues("connections", class).Inc() })
	if !s.tls.Enabled() { // plain HTTP/1.1 static requests: web/fastlane.go
		if s.fast, err = s.newFastLane(ln, s.staticPaths(s.router())); err != nil {
			_ = ln.Close()
			return err
		}
		if s.fast != nil {
			ln = s.fast
		}
	}
	ln = batchListener{ln}
	t := s.cfg.Timeouts
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       withBatchConn,
	}
	if s.tls.Enabled() {
		// Handshakes run on the admission's workers, not on net/http's connection goroutines:
		// web/handshake.go. The per-IP cap above applies before a connection queues.
		s.srv.TLSConfig = s.tls.TLSConfig()
		s.hs = newHandshakeListener(ln, s.srv.TLSConfig, resolveHandshakes(s.cfg.TLSHandshakes, t), s.hsMetrics, s.hsHooks)
		ln = s.hs
	}
	s.wg.Go(func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "error", err)
		}
	})
	s.wg.Go(func() { s.sweepLimiters(ctx) })
	if s.cfg.TLS.Mode == "acme" {
		if err := s.startRedirect(ctx); err != nil {
			_ = s.Stop(context.Background())
			return err
		}
	}
	if err := s.startAdmin(ctx); err != nil {
		_ = s.Stop(context.Background())
		return err
	}
	s.log.Info("http plane started", "listen", s.addr.String(), "tls", s.cfg.TLS.Mode)
	return nil
}

func (s *Server) startRedirect(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.TLS.ACME.HTTPListen)
	if err != nil {
		return fmt.Errorf("http acme listen %s: %w", s.cfg.TLS.ACME.HTTPListen, err)
	}
	s.redirect = &http.Server{Handler: s.tls.HTTPHandler(), ReadHeaderTimeout: s.cfg.Timeouts.ReadHeader,
		ReadTimeout: s.cfg.Timeouts.Read, WriteTimeout: s.cfg.Timeouts.Write, IdleTimeout: s.cfg.Timeouts.Idle,
		MaxHeaderBytes: s.cfg.MaxHeaderBytes, BaseContext: func(net.Listener) context.Context { return ctx }}
	s.wg.Go(func() {
		if err := s.redirect.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http redirect server stopped", "error", err)
		}
	})
	return nil
}

// sweepLimiters forgets idle clients' buckets once a minute.
func (s *Server) sweepLimiters(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.ended.sweep(now)
			for _, l := range []*ipLimiter{s.limitAll, s.limitLog, s.limitRef, s.ws.limit} {
				if l != nil {
					l.sweep(now, 3*time.Minute)
				}
			}
		}
	}
}

// Addr is the bound listener address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.addr }

// Stop shuts down gracefully: no new connections, requests in flight get up to the shutdown
// timeout (or until ctx ends), then the rest are closed.
func (s *Server) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Shutdown)
	defer cancel()
	var errs []error
	// The admin listener goes last, so /readyz there reports the drain while the public
	// listener finishes its requests.
	for _, srv := range []*http.Server{s.srv, s.redirect, s.admin} {
		if srv == nil {
			continue
		}
		if srv == s.admin && s.adminCancel != nil {
			s.adminCancel() // profiles and traces in flight end now, with what they have
		}
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			_ = srv.Close()
		}
		if srv == s.srv && s.fast != nil {
			errs = append(errs, s.fast.shutdown(ctx)) // its busy connections; Shutdown closed the idle ones
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.ws.drain()
	s.wg.Wait()
	return errors.Join(errs...)
}

// recoverer turns a handler panic into a 500 and one log line, instead of a dropped connection.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("http handler panic", "request_id", RequestID(r.Context()), "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeJSONError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// accessLog writes one JSON line per request (at info level) and feeds the request metrics.
// The line's fields are only worked out when info is enabled: the level is checked per
// request, so a reload that changes it applies at once.
func (s *Server) accessLog(fixedRoute string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := fixedRoute
			if route == "" {
				route = chi.RouteContext(r.Context()).RoutePattern()
			}
			if route == "" {
				route = "unmatched"
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			took := time.Since(start)
			s.m.observe(route, status, took)
			if !s.log.Enabled(context.Background(), slog.LevelInfo) {
				return
			}
			s.log.LogAttrs(context.Background(), slog.LevelInfo, "http request",
				slog.String("request_id", RequestID(r.Context())), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", status), slog.Int("bytes", ww.BytesWritten()),
				slog.Int64("duration_ms", took.Milliseconds()), slog.String("remote", ClientIP(r).String()))
		})
	}
}

// Header values the HTTP plane sets on many responses, made once and shared by all of them.
// Each is a one-element slice without spare capacity, so Header.Add copies it instead of
// appending in place; nothing here or in net/http writes into a header value in place
// (Set and Del replace or remove the slice). Keys are in canonical form, so assigning to the
// map is what Header.Set does, without canonicalising and allocating per response.
var (
	hvCSP = []string{"default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
		"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"}
	hvNoSniff    = []string{"nosniff"}
	hvNoReferrer = []string{"no-referrer"}
	hvDeny       = []string{"DENY"}
	hvHSTS       = []string{"max-age=31536000; includeSubDomains"}
)

// securityHeaders sets the browser protections every response carries.
func (s *Server) securityHeaders(next http.Handler) http.Handler {
	tlsOn := s.tls.Enabled()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Security-Policy"] = hvCSP
		h["X-Content-Type-Options"] = hvNoSniff
		h["Referrer-Policy"] = hvNoReferrer
		h["X-Frame-Options"] = hvDeny
		if tlsOn {
			h["Strict-Transport-Security"] = hvHSTS
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin is the CSRF defence for cookie-authenticated state changes: the browser sends
// the cookie on cross-site requests too (unless SameSite stops it), so an unsafe method
// carrying it must also carry an Origin that is ours or allowed. Requests with a bearer token
// are not ambient credentials and pass.
func (s *Server) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "" {
			next.ServeHTTP(w, r)
			return
		}
		if !s.originAllowed(r) {
			writeJSONError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	scheme := "http"
	if s.tls.Enabled() {
		scheme = "https"
	}
	if origin == scheme+"://"+r.Host {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if origin == o {
			return true
		}
	}
	return false
}

var (
	hvJSON    = []string{"application/json"}
	hvNoStore = []string{"no-store"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h["Content-Type"] = hvJSON
	h["Cache-Control"] = hvNoStore
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
