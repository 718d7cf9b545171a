package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dualgate/dualgate/bridge"
	"github.com/dualgate/dualgate/sip"
	"github.com/dualgate/dualgate/sip/dispatcher"
	"github.com/dualgate/dualgate/static"
	"github.com/dualgate/dualgate/users"
	"github.com/dualgate/dualgate/web"
)

// Gateway owns the planes and their lifecycle.
type Gateway struct {
	log      *slog.Logger
	Registry *prometheus.Registry
	cfg      Config
	disp     *dispatcher.Dispatcher
	router   *sip.Router
	web      *web.Server
	probe    dispatcher.ProbeConfig

	ready  atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ dispatcher.Pinger = (*sip.Router)(nil)

// New wires the planes from a validated config. Nothing listens until Start.
// ctx bounds background work that construction starts (such as JWKS refreshes).
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Gateway, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	specs, err := cfg.DestinationSpecs()
	if err != nil {
		return nil, err
	}
	disp, err := dispatcher.New(specs, log.With("component", "dispatcher"), dispatcher.NewMetrics(reg))
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	var st *users.Store
	var dir sip.Directory // nil: no users, so no registrations and no digest callers
	if cfg.UsersFile != "" {
		if st, err = users.Load(cfg.UsersFile); err != nil {
			return nil, fmt.Errorf("users_file: %w", err)
		}
		if st.Realm() != cfg.SIP.Auth.Realm {
			// The HA1 hashes are computed over the realm: with another one every login fails.
			return nil, fmt.Errorf("users_file realm %q differs from sip.auth.realm %q", st.Realm(), cfg.SIP.Auth.Realm)
		}
		dir = sipUsers{st}
	}
	router, err := sip.New(cfg.SIP, disp, dir, log.With("component", "sip"), reg)
	if err != nil {
		return nil, fmt.Errorf("sip plane: %w", err)
	}
	g := &Gateway{log: log, Registry: reg, cfg: cfg, disp: disp, router: router, probe: cfg.Dispatcher.Probe}
	agents := bridge.New(cfg.Bridge, router, log.With("component", "bridge"), reg)
	deps := web.Deps{Admin: adminAdapter{g}, Ready: g, Metrics: reg, Static: static.Files, Agents: agents}
	if st != nil {
		deps.Accounts = accounts{st}
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	g.web, err = web.New(ctx, cfg.HTTP, deps, log.With("component", "http"), reg)
	if err != nil {
		return nil, fmt.Errorf("http plane: %w", err)
	}
	return g, nil
}

// Ready implements web.Readiness: both planes started and not stopping.
func (g *Gateway) Ready() error {
	if !g.ready.Load() {
		return errors.New("starting or stopping")
	}
	return nil
}

// Start starts the SIP plane and health probing. A failed start stops what already started.
func (g *Gateway) Start(ctx context.Context) error {
	ctx, g.cancel = context.WithCancel(ctx)
	if err := g.router.Start(ctx); err != nil {
		g.cancel()
		return fmt.Errorf("start sip plane: %w", err)
	}
	if err := g.web.Start(ctx); err != nil {
		g.cancel()
		_ = g.router.Stop(context.Background())
		return fmt.Errorf("start http plane: %w", err)
	}
	g.wg.Go(func() { g.disp.Probe(ctx, g.probe, g.router) })
	g.ready.Store(true)
	return nil
}

// Stop stops probing and the planes, waiting at most until ctx ends.
func (g *Gateway) Stop(ctx context.Context) error {
	g.ready.Store(false) // readiness fails first, so a load balancer stops sending
	webErr := g.web.Stop(ctx)
	if g.cancel != nil {
		g.cancel()
	}
	err := g.router.Stop(ctx)
	g.wg.Wait()
	return errors.Join(webErr, err)
}

// HTTPAddr is the HTTP plane's bound address.
func (g *Gateway) HTTPAddr() string { return g.web.Addr().String() }

// AdminAddr is the admin listener's bound address (http.admin_listen), "" when there is none.
func (g *Gateway) AdminAddr() string {
	if a := g.web.AdminAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Reload applies what can change at run time: the dispatcher sets. It is all-or-nothing; a
// change to anything else needs a restart and is reported as such.
func (g *Gateway) Reload(cfg Config) error {
	specs, err := cfg.DestinationSpecs()
	if err != nil {
		return err
	}
	return g.disp.Reload(specs)
}

// Router exposes the SIP plane (tests and the admin API read its state).
func (g *Gateway) Router() *sip.Router { return g.router }

// Dispatcher exposes the dispatcher.
func (g *Gateway) Dispatcher() *dispatcher.Dispatcher { return g.disp }
