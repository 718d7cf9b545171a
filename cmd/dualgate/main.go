// Command dualgate runs the call-center gateway: the SIP plane (proxy, dispatcher) and, as they
// land, the HTTP plane and the WebSocket bridge, in one process.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof"
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
	cmd := "run"
	if len(args) > 0 && args[0] == "check" {
		cmd, args = "check", args[1:]
	}
	fs := flag.NewFlagSet("dualgate "+cmd, flag.ExitOnError)
	path := fs.String("config", "", "config file (default: the embedded development config)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (off by default; keep it on loopback)")
	_ = fs.Parse(args)

	cfg, err := load(*path)
	if cmd == "check" {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintln(os.Stderr, "WARNING:", w)
		}
		fmt.Println("config OK")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *pprofAddr != "" {
		// Until the HTTP plane's admin listener exists, profiling gets its own loopback port.
		go func() {
			srv := &http.Server{Addr: *pprofAddr, ReadHeaderTimeout: 5 * time.Second}
			fmt.Fprintln(os.Stderr, "pprof:", srv.ListenAndServe())
		}()
	}
	if err := run(cfg, *path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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
