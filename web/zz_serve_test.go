package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/static"
)

// Temporary: DG_SERVE=127.0.0.1:18180 go test -run ZZServe runs the plane like the bench config.
func TestZZServe(t *testing.T) {
	addr := os.Getenv("DG_SERVE")
	if addr == "" {
		t.Skip()
	}
	go http.ListenAndServe("127.0.0.1:16061", nil)
	cfg := Defaults()
	cfg.Listen = addr
	cfg.JWT.EphemeralSecret = true
	cfg.RateLimit.PerIP, cfg.RateLimit.MaxConnsPerIP = 0, 0
	if os.Getenv("DG_LIMITS") != "" {
		cfg.RateLimit.PerIP, cfg.RateLimit.Burst, cfg.RateLimit.MaxConnsPerIP = 1e9, 1e9, 1000
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt)
	<-ch
	s.Stop(context.Background())
}
