// Command dualgate runs the call-center gateway: the SIP plane (proxy, dispatcher) and, as they
// land, the HTTP plane and the WebSocket bridge, in one process.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dualgate/dualgate/configs"
	"github.com/dualgate/dualgate/gateway"
	"github.com/dualgate/dualgate/sip"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "passwd" {
		os.Exit(passwdMain(args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	if len(args) > 0 && args[0] == "token" {
		os.Exit(tokenMain(args[1:], os.Stdout, os.Stderr))
	}
	cmd := "run"
	if len(args) > 0 && args[0] == "check" {
		cmd, args = "check", args[1:]
	}
	fs := flag.NewFlagSet("dualgate "+cmd, flag.ExitOnError)
	path := fs.String("config", "", "config file (default: the embedded development config)")
	pprofAddr := fs.String("pprof", "", "also serve the admin endpoints (net/http/pprof under /debug/pprof/, /metrics, "+
		"/healthz, /readyz) on this address, e.g. 127.0.0.1:6060, leaving /metrics on the public listener; "+
		"for profiling sessions and benches (production: http.admin_listen)")
	_ = fs.Parse(args)

	if cmd == "check" {
		os.Exit(check(*path, *pprofAddr, os.Stdout, os.Stderr))
	}
	cfg, err := loadWithFlags(*path, *pprofAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := run(cfg, *path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// check runs `dualgate check`: every problem at once, then the warnings.
func check(path, pprofAddr string, stdout, stderr io.Writer) int {
	cfg, err := loadWithFlags(path, pprofAddr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	fmt.Fprintln(stdout, "config OK")
	return 0
}

// loadWithFlags loads the config and applies the command-line flags that override it.
func loadWithFlags(path, pprofAddr string) (gateway.Config, error) {
	cfg, err := load(path)
	if err != nil || pprofAddr == "" {
		return cfg, err
	}
	cfg.HTTP.DebugListen = pprofAddr
	return cfg, cfg.Validate()
}

func load(path string) (gateway.Config, error) {
	if path == "" {
		return loadEmbedded()
	}
	return gateway.Load(path)
}

// loadEmbedded runs the built-in development config. It names its demo users file relative to
// itself, so that file is written, from the binary, to a private directory beside it.
func loadEmbedded() (gateway.Config, error) {
	dir, err := os.MkdirTemp("", "dualgate-dev-")
	if err != nil {
		return gateway.Config{}, fmt.Errorf("embedded config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.yaml"), configs.DemoUsers, 0o600); err != nil {
		return gateway.Config{}, fmt.Errorf("embedded config: %w", err)
	}
	return gateway.Parse(configs.Default, dir)
}

func run(cfg gateway.Config, path string) error {
	log := cfg.Logger()
	sip.ApplyProcessSettings(cfg.SIP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	gw, err := gateway.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := gw.Start(ctx); err != nil {
		return err
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return gw.Stop(sctx)
		case <-hup:
			next, err := load(path)
			if err == nil {
				err = gw.Reload(next)
			}
			if err != nil {
				log.Error("reload rejected, keeping the running config", "error", err)
				continue
			}
			log.Info("reloaded")
		}
	}
}
