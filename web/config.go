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
	"strconv"
	"strings"
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
	// TLSHandshakes bounds the TLS handshakes of the HTTPS listener (web/handshake.go);
	// unused when tls.mode is off.
	TLSHandshakes HandshakeConfig `yaml:"tls_handshakes"`
	// TrustedProxies are CIDRs of reverse proxies whose X-Forwarded-For names the client.
	// From anyone else the header is ignored. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AllowedOrigins may make cookie-authenticated state changes (CSRF defence), besides the
	// gateway's own origin. Default: none.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AdminListen is the host:port of a separate plain-HTTP listener for operators and
	// monitoring: /metrics, /healthz, /readyz and net/http/pprof under /debug/pprof/. When it
	// is set, /metrics leaves the public listener (which keeps /healthz and /readyz for load
	// balancers) and pprof is served here only. Keep it on loopback or a management network:
	// it has no authentication. Default: none (metrics on the public listener, no pprof).
	AdminListen string `yaml:"admin_listen"`
	// DebugListen is set by the -pprof command-line flag, never by the file: the same admin
	// endpoints on one more address, for profiling sessions and benches, while /metrics stays
	// on the public listener. Exclusive with AdminListen.
	DebugListen string `yaml:"-"`
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

// HandshakeConfig is the HTTPS listener's handshake admission: accepted connections wait in
// arrival order for one of Concurrency workers, which each run one handshake at a time with
// a deadline of min(timeouts.read_header, read, write) from the handshake's start. Every
// field's zero value means its default.
type HandshakeConfig struct {
	// Concurrency is the handshakes in progress at most. Default 64 × GOMAXPROCS.
	Concurrency int `yaml:"concurrency"`
	// Queue is the connections waiting for a worker at most; a connection arriving when it
	// is full is closed. Default 16384.
	Queue int `yaml:"queue"`
	// QueueWait is how long a connection may wait for a worker before it is closed. Default
	// three handshake deadlines (15 s with the default timeouts).
	QueueWait time.Duration `yaml:"queue_wait"`
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
	// RefreshPerMinute caps POST /api/refresh per client IP per minute. A portal refreshes
	// once per two thirds of a token's ttl, so the default leaves room for a call center
	// behind one NAT address. Default 60.
	RefreshPerMinute float64 `yaml:"refresh_per_minute"`
	// Networks are named address classes with their own per-IP limits, for clients that
	// are many people behind one address (a contact center's office NAT). A client IP inside
	// one of them gets that class's limits, still keyed per IP; everyone else gets the ones
	// above. No two networks may overlap. Default: none.
	Networks []NetworkLimits `yaml:"networks"`
}

// NetworkLimits is one address class of http.rate_limit.networks. Every limit left unset
// takes the value of the same key in http.rate_limit; 0 disables it for the class. The per
// user limits (ws_per_user, the login lockout) are not per address and stay as they are.
type NetworkLimits struct {
	// Name labels the class in the refusal metric; unique, and not "default".
	Name string `yaml:"name"`
	// CIDRs are the class's addresses (a bare address is one host). Required.
	CIDRs            []string `yaml:"cidrs"`
	PerIP            *float64 `yaml:"per_ip"`
	Burst            *int     `yaml:"burst"`
	LoginPerMinute   *float64 `yaml:"login_per_minute"`
	MaxConnsPerIP    *int     `yaml:"max_conns_per_ip"`
	WSPerMinute      *float64 `yaml:"ws_per_minute"`
	RefreshPerMinute *float64 `yaml:"refresh_per_minute"`
}

// resolve is the class's limits: base (http.rate_limit) with the fields n sets replaced.
// The result has no Networks.
func (n NetworkLimits) resolve(base RateLimitConfig) RateLimitConfig {
	r := base
	r.Networks = nil
	setF := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	setI := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	setF(&r.PerIP, n.PerIP)
	setI(&r.Burst, n.Burst)
	setF(&r.LoginPerMinute, n.LoginPerMinute)
	setI(&r.MaxConnsPerIP, n.MaxConnsPerIP)
	setF(&r.WSPerMinute, n.WSPerMinute)
	setF(&r.RefreshPerMinute, n.RefreshPerMinute)
	return r
}

// negative reports whether any per-IP limit of r is below zero.
func (r RateLimitConfig) negative() bool {
	return r.PerIP < 0 || r.Burst < 0 || r.LoginPerMinute < 0 || r.MaxConnsPerIP < 0 || r.WSPerMinute < 0 || r.RefreshPerMinute < 0
}

// defaultClass is the metric label of the clients in no http.rate_limit.networks entry.
const defaultClass = "default"

// validateNetworks checks http.rate_limit.networks: a unique name, CIDRs that parse, limits
// that are not negative (those it sets), and no address in two networks. An address in
// two would make its limits depend on the order of the list, which a reader of the config
// could easily get wrong; overlapping networks are refused instead.
func (rl RateLimitConfig) validateNetworks() []error {
	var errs []error
	type owned struct {
		p    netip.Prefix
		name string
	}
	var seen []owned
	names := map[string]bool{}
	for i, n := range rl.Networks {
		key := fmt.Sprintf("http.rate_limit.networks[%d]", i)
		if n.Name != "" {
			key += " (" + n.Name + ")"
		}
		switch {
		case n.Name == "":
			errs = append(errs, fmt.Errorf("%s: a name is required", key))
		case n.Name == defaultClass:
			errs = append(errs, fmt.Errorf("%s: the name %q is taken by the clients in no network", key, defaultClass))
		case names[n.Name]:
			errs = append(errs, fmt.Errorf("%s: the name is already used by another network", key))
		}
		names[n.Name] = true
		if len(n.CIDRs) == 0 {
			errs = append(errs, fmt.Errorf("%s: cidrs are required", key))
		}
		prefixes, err := parsePrefixes(n.CIDRs)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: cidrs: %w", key, err))
		}
		for _, p := range prefixes {
			for _, o := range seen {
				if o.p.Overlaps(p) {
					errs = append(errs, fmt.Errorf("%s: %s overlaps %s of network %q; networks must not overlap", key, p, o.p, o.name))
				}
			}
		}
		for _, p := range prefixes {
			seen = append(seen, owned{p, n.Name})
		}
		// Only what the network sets: an inherited problem is reported for http.rate_limit.
		if own := n.resolve(RateLimitConfig{}); own.negative() {
			errs = append(errs, fmt.Errorf("%s: values must not be negative (0 means no limit)", key))
		} else if r := n.resolve(rl); (n.PerIP != nil || n.Burst != nil) && r.PerIP > 0 && r.Burst < 1 {
			errs = append(errs, fmt.Errorf("%s: burst must be at least 1 when per_ip is set", key))
		}
	}
	return errs
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
			WSPerMinute: 30, WSPerUser: 4, RefreshPerMinute: 60},
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
	if rl.negative() || rl.WSPerUser < 0 {
		errs = append(errs, errors.New("http.rate_limit: values must not be negative (0 means no limit)"))
	}
	if h := c.TLSHandshakes; h.Concurrency < 0 || h.Queue < 0 || h.QueueWait < 0 {
		errs = append(errs, errors.New("http.tls_handshakes: values must not be negative (0 means the default)"))
	}
	if rl.PerIP > 0 && rl.Burst < 1 {
		errs = append(errs, errors.New("http.rate_limit.burst must be at least 1 when per_ip is set"))
	}
	errs = append(errs, rl.validateNetworks()...)
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("http.trusted_proxies: %w", err))
	}
	errs = append(errs, c.validateAdmin()...)
	return errors.Join(errs...)
}

// validateAdmin checks the admin listener's address: host:port with a numeric port, and not
// an address another listener of the HTTP plane already takes.
func (c Config) validateAdmin() []error {
	var errs []error
	check := func(key, addr string) {
		if addr == "" {
			return
		}
		if err := checkListenAddr(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w (want host:port, e.g. 127.0.0.1:9090)", key, addr, err))
			return
		}
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			return // a port of the kernel's choosing never collides
		}
		if addr == c.Listen {
			errs = append(errs, fmt.Errorf("%s %q: the same address as http.listen; the admin endpoints need their own port", key, addr))
		}
		if c.TLS.Mode == "acme" && addr == c.TLS.ACME.HTTPListen {
			errs = append(errs, fmt.Errorf("%s %q: the same address as http.tls.acme.http_listen", key, addr))
		}
	}
	check("http.admin_listen", c.AdminListen)
	check("-pprof", c.DebugListen)
	if c.AdminListen != "" && c.DebugListen != "" {
		errs = append(errs, fmt.Errorf("-pprof %q: http.admin_listen %q already serves pprof under /debug/pprof/; drop the flag",
			c.DebugListen, c.AdminListen))
	}
	return errs
}

// checkListenAddr accepts what net.Listen("tcp", addr) would bind: an optional host (empty
// means every interface) and a port number. A service name such as "http" is refused: the
// address should say the port it takes.
func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); host != "" && err != nil && !hostName(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
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

// hostName reports whether s is shaped like a DNS name: dot-separated labels of letters,
// digits and hyphens.
func hostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
