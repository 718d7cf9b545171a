// Package web is the HTTP plane: the server (timeouts, TLS modes, graceful shutdown), its
// middleware (request ID, recovery, access log, security headers, rate limits), health and
// metrics endpoints, the admin API and the embedded portals. No SIP logic lives here: the plane
// reaches the SIP side only through the small interfaces it declares (Admin, Readiness).
package web

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/dualgate/dualgate/web/auth"
	"github.com/dualgate/dualgate/web/tlsmode"
)

// Config is the `http` section of the gateway config.
type Config struct {
	// Listen is the host:port of the HTTP(S) listener. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// TLS selects off (plain HTTP, the development default), files or acme.
	TLS tlsmode.Config `yaml:"tls"`
	// JWT is how tokens are verified (and minted by the embedded login).
	JWT auth.Config `yaml:"jwt"`
	// Timeouts protect the server from slow clients. Defaults: read_header 5s, read 30s,
	// write 30s, idle 120s.
	Timeouts TimeoutConfig `yaml:"timeouts"`
	// MaxHeaderBytes caps the request header size; larger gets 431. Default 16 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// RateLimit is the HTTP plane's own limits, separate from the SIP plane's.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// TrustedProxies are CIDRs of reverse proxies whose X-Forwarded-For names the client.
	// From anyone else the header is ignored. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AllowedOrigins may make cookie-authenticated state changes (CSRF defence), besides the
	// gateway's own origin. Default: none.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// TimeoutConfig holds the http.Server timeouts.
type TimeoutConfig struct {
	ReadHeader time.Duration `yaml:"read_header"`
	Read       time.Duration `yaml:"read"`
	Write      time.Duration `yaml:"write"`
	Idle       time.Duration `yaml:"idle"`
	// Shutdown is how long a graceful stop waits for requests in flight. Default 10s.
	Shutdown time.Duration `yaml:"shutdown"`
}

// RateLimitConfig sets the per-client limits. Every field's zero value means "no limit"
// except where Defaults sets one.
type RateLimitConfig struct {
	// PerIP is the sustained requests per second per client IP on every route. Default 50.
	PerIP float64 `yaml:"per_ip"`
	// Burst is how many requests above the sustained rate a client may send at once. Default 100.
	Burst int `yaml:"burst"`
	// Login is the requests per minute per client IP on the login route. Default 10.
	LoginPerMinute float64 `yaml:"login_per_minute"`
	// MaxConnsPerIP caps concurrent connections per client IP. Default 64.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// WSPerMinute caps WebSocket upgrades (/ws) per client IP per minute. Default 30.
	WSPerMinute float64 `yaml:"ws_per_minute"`
	// WSPerUser caps the agent sockets one user may hold open at once. Default 4.
	WSPerUser int `yaml:"ws_per_user"`
}

// Defaults is the HTTP plane's embedded default: plain HTTP on loopback.
func Defaults() Config {
	return Config{
		Listen: "127.0.0.1:8080",
		TLS:    tlsmode.DefaultConfig(),
		JWT:    auth.DefaultConfig(),
		Timeouts: TimeoutConfig{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second,
			Idle: 120 * time.Second, Shutdown: 10 * time.Second},
		MaxHeaderBytes: 16 << 10,
		RateLimit: RateLimitConfig{PerIP: 50, Burst: 100, LoginPerMinute: 10, MaxConnsPerIP: 64,
			WSPerMinute: 30, WSPerUser: 4},
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen %q: %w", c.Listen, err))
	}
	for _, e := range c.TLS.Validate() {
		errs = append(errs, fmt.Errorf("http.tls: %w", e))
	}
	for _, e := range c.JWT.Validate() {
		errs = append(errs, fmt.Errorf("http.jwt: %w", e))
	}
	t := c.Timeouts
	if t.ReadHeader <= 0 || t.Read <= 0 || t.Write <= 0 || t.Idle <= 0 || t.Shutdown <= 0 {
		errs = append(errs, errors.New("http.timeouts: read_header, read, write, idle and shutdown must be positive"))
	}
	if c.MaxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("http.max_header_bytes %d: at least 1024", c.MaxHeaderBytes))
	}
	rl := c.RateLimit
	if rl.PerIP < 0 || rl.Burst < 0 || rl.LoginPerMinute < 0 || rl.MaxConnsPerIP < 0 || rl.WSPerMinute < 0 || rl.WSPerUser < 0 {
		errs = append(errs, errors.New("http.rate_limit: values must not be negative (0 means no limit)"))
	}
	if rl.PerIP > 0 && rl.Burst < 1 {
		errs = append(errs, errors.New("http.rate_limit.burst must be at least 1 when per_ip is set"))
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("http.trusted_proxies: %w", err))
	}
	return errors.Join(errs...)
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				errs = append(errs, fmt.Errorf("%q is neither a CIDR nor an address", s))
				continue
			}
		}
		out = append(out, p.Masked())
	}
	return out, errors.Join(errs...)
}
