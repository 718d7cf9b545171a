package sip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// Config is the SIP plane's configuration. Every field's default is stated on it; the zero
// value of a field means "use the default" only where Defaults says so.
type Config struct {
	// Listen lists sockets as transport:host:port, e.g. "udp:127.0.0.1:5060",
	// "tcp:[::1]:5060". Default: udp and tcp on 127.0.0.1:5060.
	Listen []string `yaml:"listen"`
	// Advertise is the host[:port] written into Via and Record-Route: the unicast address that
	// pins a dialog to this node even when it was reached through an anycast or load-balancer
	// address. Default: the host of the first listener, with each listener's own port.
	Advertise string `yaml:"advertise"`
	// MaxMessageSize is the largest SIP message accepted, in bytes. Default 65535.
	MaxMessageSize int `yaml:"max_message_size"`
	// UDPBuffer is the kernel receive and send buffer of each UDP socket, in bytes. Bursts
	// wait there instead of being dropped while the router is busy. The kernel caps it at
	// net.core.rmem_max / wmem_max. Default 4 MiB.
	UDPBuffer int `yaml:"udp_buffer"`
	// Timers are the router's own per-branch timers (Kamailio's fr_timer / fr_inv_timer).
	Timers TimerConfig `yaml:"timers"`
	// MaxInflight caps INVITE transactions waiting for a final answer. Past it, new calls get
	// 503 with Retry-After at once instead of queueing until every caller times out.
	// Default 2000.
	MaxInflight int `yaml:"max_inflight"`
	// MaxCPS caps new calls (initial INVITEs) per second. Past it, calls are refused at once
	// with a stateless 503 and Retry-After, before any parsing or transaction, so the gateway
	// keeps completing calls at this rate instead of collapsing under more. Set it a little
	// below the clean rate `make bench` measures on your hardware. Default 0: no cap.
	MaxCPS int `yaml:"max_cps"`
	// RetryAfter is the Retry-After (seconds) on 503s we generate. Default 5.
	RetryAfter int `yaml:"retry_after"`
	// MaxDialogDuration ends tracking of a call whose BYE was never seen. Default 6h.
	MaxDialogDuration time.Duration `yaml:"max_dialog_duration"`
	// Routes decide which new requests go to which dispatcher set: first match wins. A request
	// that matches nothing gets 404. Default: INVITE to set 1, round-robin.
	Routes []RouteConfig `yaml:"routes"`
}

// TimerConfig holds the failover timers.
type TimerConfig struct {
	// Response is how long a branch may go without any response before the next destination
	// is tried (fr_timer). Default 2s.
	Response time.Duration `yaml:"response"`
	// InviteFinal is how long an INVITE branch may ring (after a provisional) before it is
	// cancelled and the next destination tried (fr_inv_timer). Default 120s.
	InviteFinal time.Duration `yaml:"invite_final"`
}

// RouteConfig is one entry of the first-match route table.
type RouteConfig struct {
	// Name appears in logs and metrics.
	Name string `yaml:"name"`
	// Methods the route applies to. Default: INVITE.
	Methods []string `yaml:"methods"`
	// RURIUser and RURIDomain are regular expressions matched against the whole Request-URI
	// user and host. Empty matches anything.
	RURIUser   string `yaml:"ruri_user"`
	RURIDomain string `yaml:"ruri_domain"`
	// Sources restricts the route to source addresses in these CIDRs. Empty matches anything.
	Sources []string `yaml:"sources"`
	// Set is the dispatcher set id and Algorithm the Kamailio algorithm number.
	Set       int `yaml:"set"`
	Algorithm int `yaml:"algorithm"`
}

// Defaults returns the embedded default configuration of the SIP plane.
func Defaults() Config {
	return Config{
		Listen:            []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"},
		MaxMessageSize:    65535,
		UDPBuffer:         4 << 20,
		Timers:            TimerConfig{Response: 2 * time.Second, InviteFinal: 120 * time.Second},
		MaxInflight:       2000,
		RetryAfter:        5,
		MaxDialogDuration: 6 * time.Hour,
		Routes: []RouteConfig{{Name: "default", Methods: []string{"INVITE"}, Set: 1,
			Algorithm: int(dispatcher.AlgRoundRobin)}},
	}
}

type listenSpec struct {
	transport string // "udp" or "tcp"
	addr      string // host:port
}

func parseListen(s string) (listenSpec, error) {
	tr, addr, ok := strings.Cut(s, ":")
	if !ok {
		return listenSpec{}, fmt.Errorf("sip.listen %q: want transport:host:port", s)
	}
	tr = strings.ToLower(tr)
	if tr != "udp" && tr != "tcp" {
		return listenSpec{}, fmt.Errorf("sip.listen %q: transport %q not supported here (udp, tcp)", s, tr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return listenSpec{}, fmt.Errorf("sip.listen %q: %w", s, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return listenSpec{}, fmt.Errorf("sip.listen %q: host must be an IP address", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return listenSpec{}, fmt.Errorf("sip.listen %q: bad port", s)
	}
	return listenSpec{transport: tr, addr: addr}, nil
}

// Validate reports every problem in the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("sip.listen: at least one listener is required"))
	}
	for _, l := range c.Listen {
		if _, err := parseListen(l); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Advertise != "" {
		if _, _, err := splitAdvertise(c.Advertise); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > 65535 {
		errs = append(errs, fmt.Errorf("sip.max_message_size %d: must be within 1024..65535", c.MaxMessageSize))
	}
	if c.UDPBuffer < 0 {
		errs = append(errs, errors.New("sip.udp_buffer must not be negative"))
	}
	if c.Timers.Response <= 0 || c.Timers.InviteFinal <= 0 {
		errs = append(errs, errors.New("sip.timers: response and invite_final must be positive"))
	}
	if c.MaxInflight < 1 {
		errs = append(errs, errors.New("sip.max_inflight must be at least 1"))
	}
	if c.MaxCPS < 0 {
		errs = append(errs, errors.New("sip.max_cps must not be negative (0 means no cap)"))
	}
	if c.RetryAfter < 0 {
		errs = append(errs, errors.New("sip.retry_after must not be negative"))
	}
	if c.MaxDialogDuration <= 0 {
		errs = append(errs, errors.New("sip.max_dialog_duration must be positive"))
	}
	for i, r := range c.Routes {
		if _, err := compileRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("sip.routes[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func splitAdvertise(s string) (string, int, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return "", 0, fmt.Errorf("sip.advertise %q: bad port", s)
		}
		return host, p, nil
	}
	if strings.Contains(s, ":") {
		// Without a port, a colon is only allowed inside a bare IPv6 address.
		if ip, err := netip.ParseAddr(s); err != nil || !ip.Is6() {
			return "", 0, fmt.Errorf("sip.advertise %q: want host, host:port or [ipv6]:port", s)
		}
		return s, 0, nil
	}
	if s == "" || strings.ContainsAny(s, "[] /") {
		return "", 0, fmt.Errorf("sip.advertise %q: want host, host:port or [ipv6]:port", s)
	}
	return s, 0, nil
}

// route is a compiled RouteConfig.
type route struct {
	name       string
	methods    []string
	user, host *regexp.Regexp
	sources    []netip.Prefix
	set        int
	alg        dispatcher.Algorithm
}

func compileRoute(rc RouteConfig) (route, error) {
	r := route{name: rc.Name, set: rc.Set, alg: dispatcher.Algorithm(rc.Algorithm)}
	var errs []error
	if !r.alg.Valid() {
		errs = append(errs, fmt.Errorf("algorithm %d is not one of 0,1,2,3,4,5,6,8,9,10,11,13", rc.Algorithm))
	}
	r.methods = rc.Methods
	if len(r.methods) == 0 {
		r.methods = []string{"INVITE"}
	}
	for i, m := range r.methods {
		r.methods[i] = strings.ToUpper(m)
	}
	var err error
	if rc.RURIUser != "" {
		if r.user, err = regexp.Compile("^(?:" + rc.RURIUser + ")$"); err != nil {
			errs = append(errs, fmt.Errorf("ruri_user: %w", err))
		}
	}
	if rc.RURIDomain != "" {
		if r.host, err = regexp.Compile("(?i)^(?:" + rc.RURIDomain + ")$"); err != nil {
			errs = append(errs, fmt.Errorf("ruri_domain: %w", err))
		}
	}
	for _, s := range rc.Sources {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("sources: %w", err))
			continue
		}
		r.sources = append(r.sources, p.Masked())
	}
	return r, errors.Join(errs...)
}

func (r *route) match(method, user, host string, src netip.Addr) bool {
	found := false
	for _, m := range r.methods {
		if m == method {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	if r.user != nil && !r.user.MatchString(user) {
		return false
	}
	if r.host != nil && !r.host.MatchString(host) {
		return false
	}
	if len(r.sources) > 0 {
		for _, p := range r.sources {
			if p.Contains(src.Unmap()) {
				return true
			}
		}
		return false
	}
	return true
}
