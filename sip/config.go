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

	"github.com/dualgate/dualgate/internal/tlsadmit"
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
	// that matches nothing gets 404. Default: INVITE to set 1, round-robin. Only trusted
	// sources (the cluster, Trusted) and authenticated users reach the route table; trunks go
	// to their own set.
	Routes []RouteConfig `yaml:"routes"`

	// Domains are host names that, besides our listener addresses and Advertise, make a
	// Request-URI ours: REGISTER for it, and INVITE to one of its users. Default none.
	Domains []string `yaml:"domains"`
	// Trusted lists CIDRs trusted like the cluster: they may call users without digest. The
	// addresses of dispatcher destinations are always trusted. Default none.
	Trusted []string `yaml:"trusted"`
	// Trunks are carriers identified by source address: their calls need no digest and go to
	// their own dispatcher set. Everyone else must authenticate or is refused.
	Trunks []TrunkConfig `yaml:"trunks"`
	// Auth is digest authentication for REGISTER (401) and other requests from users (407).
	Auth AuthConfig `yaml:"auth"`
	// Registrar holds the location service's limits and NAT keepalives.
	Registrar RegistrarConfig `yaml:"registrar"`
	// Guard is the SIP plane's own flood protection (separate from the HTTP plane's limits).
	Guard GuardConfig `yaml:"guard"`
	// TLS is the certificate of the tls: listeners.
	TLS TLSConfig `yaml:"tls"`
	// TopologyHiding keeps internal addresses from outside parties: the cluster's Contact,
	// Via and Server headers never leave through the gateway. Default true.
	TopologyHiding bool `yaml:"topology_hiding"`
}

// TrunkConfig is one carrier, trusted by source address.
type TrunkConfig struct {
	Name    string   `yaml:"name"`
	Sources []string `yaml:"sources"` // CIDRs
	// Set and Algorithm: where the trunk's calls go (Kamailio algorithm numbers). Default set 1,
	// round-robin.
	Set       int `yaml:"set"`
	Algorithm int `yaml:"algorithm"`
	// Rate and Burst are the per-source request limits of this trunk's addresses, instead of
	// guard.rate/burst. Default 500/s, burst 1000.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// AuthConfig configures digest authentication (RFC 3261 §22, RFC 8760).
type AuthConfig struct {
	// Realm of the challenges. It must equal the users file's realm, as the HA1 hashes there
	// are computed over it. Default "dualgate".
	Realm string `yaml:"realm"`
	// Algorithms offered, strongest first, one challenge each: SHA-256, MD5. Default MD5 only:
	// many deployed stacks (baresip 1.0 among them, tested) fail outright when a challenge
	// names an algorithm they lack, even next to MD5. Offer [SHA-256, MD5] (RFC 8760) once
	// every phone supports SHA-256.
	Algorithms []string `yaml:"algorithms"`
	// NonceTTL is how long a nonce is good; a correct answer on an older one gets a fresh
	// challenge with stale=true. Default 5m.
	NonceTTL time.Duration `yaml:"nonce_ttl"`
}

// RegistrarConfig configures the registrar and location service.
type RegistrarConfig struct {
	MinExpires     time.Duration `yaml:"min_expires"`     // default 60s; shorter gets 423
	MaxExpires     time.Duration `yaml:"max_expires"`     // default 1h; longer is lowered
	DefaultExpires time.Duration `yaml:"default_expires"` // default 1h
	MaxContacts    int           `yaml:"max_contacts"`    // per user, default 10
	// Keepalive is the interval of OPTIONS pings to bindings registered over UDP, which keep
	// their NAT mapping open. 0 turns them off. Default 25s.
	Keepalive time.Duration `yaml:"keepalive"`
}

// GuardConfig configures flood protection.
type GuardConfig struct {
	// Rate and Burst: requests per second per source address (IPv6: per /64). 0 turns the
	// limit off. Default 50/s, burst 100.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// BanTime is how long a source that keeps flooding, or fails digest auth AuthFailures
	// times within AuthWindow, is ignored. Default 10m.
	BanTime      time.Duration `yaml:"ban_time"`
	AuthFailures int           `yaml:"auth_failures"` // default 10
	AuthWindow   time.Duration `yaml:"auth_window"`   // default 5m
	// ScannerUserAgents are User-Agent substrings (case-insensitive) whose requests are
	// dropped without an answer. Default: well-known SIP scanners.
	ScannerUserAgents []string `yaml:"scanner_user_agents"`
}

// TLSConfig is the certificate of the SIP TLS listeners.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, makes TLS clients present a certificate signed by these CAs
	// (trunks with mutual TLS). Default: no client certificate asked for.
	ClientCAFile string `yaml:"client_ca_file"`
	// CAFile is what backends reached over TLS (URIs with ;transport=tls or sips:) are verified
	// against. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// Handshakes bounds the TLS handshakes of the tls: listeners (internal/tlsadmit), each
	// listener on its own: a reconnect storm of TLS phones after a restart is handshaken in
	// arrival order by a bounded number of workers instead of all at once.
	Handshakes HandshakeConfig `yaml:"handshakes"`
}

// HandshakeConfig is a tls: listener's handshake admission: accepted connections wait in
// arrival order for one of Concurrency workers, which each run one handshake at a time with
// a deadline of Timeout from the handshake's start; sipgo sees only handshaken connections.
// Every field's zero value means its default.
type HandshakeConfig struct {
	// Concurrency is the handshakes in progress at most. Default 64 × GOMAXPROCS.
	Concurrency int `yaml:"concurrency"`
	// Queue is the connections waiting for a worker at most; a connection arriving when it
	// is full is closed. Default 16384.
	Queue int `yaml:"queue"`
	// QueueWait is how long a connection may wait for a worker before it is closed. Default
	// three handshake timeouts (15 s with the default timeout).
	QueueWait time.Duration `yaml:"queue_wait"`
	// Timeout is one handshake's deadline, counted from its start. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
}

// handshakeTimeoutDefault is a SIP TLS handshake's default deadline, the HTTPS listener's
// with its default timeouts: a handshake is one or two round trips and a few hundred µs of
// CPU once a worker runs it.
const handshakeTimeoutDefault = 5 * time.Second

// admission resolves h's defaults.
func (h HandshakeConfig) admission() tlsadmit.Config {
	t := h.Timeout
	if t <= 0 {
		t = handshakeTimeoutDefault
	}
	return tlsadmit.Config{Concurrency: h.Concurrency, Queue: h.Queue, QueueWait: h.QueueWait, Timeout: t}.WithDefaults()
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
		Auth: AuthConfig{Realm: "dualgate", Algorithms: []string{"MD5"}, NonceTTL: 5 * time.Minute},
		Registrar: RegistrarConfig{MinExpires: 60 * time.Second, MaxExpires: time.Hour,
			DefaultExpires: time.Hour, MaxContacts: 10, Keepalive: 25 * time.Second},
		Guard: GuardConfig{Rate: 50, Burst: 100, BanTime: 10 * time.Minute, AuthFailures: 10,
			AuthWindow: 5 * time.Minute},
		TopologyHiding: true,
	}
}

type listenSpec struct {
	transport string // "udp", "tcp" or "tls"
	addr      string // host:port
}

func parseListen(s string) (listenSpec, error) {
	tr, addr, ok := strings.Cut(s, ":")
	if !ok {
		return listenSpec{}, fmt.Errorf("sip.listen %q: want transport:host:port", s)
	}
	tr = strings.ToLower(tr)
	if tr != "udp" && tr != "tcp" && tr != "tls" {
		return listenSpec{}, fmt.Errorf("sip.listen %q: transport %q not supported (udp, tcp, tls)", s, tr)
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
	errs = append(errs, c.validateEdge()...)
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

// validateEdge checks the registrar, auth, trunk, guard and TLS settings.
func (c Config) validateEdge() []error {
	var errs []error
	tlsListener := false
	for _, l := range c.Listen {
		if spec, err := parseListen(l); err == nil && spec.transport == "tls" {
			tlsListener = true
		}
	}
	if tlsListener && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("sip.tls: cert_file and key_file are required for a tls: listener"))
	}
	if !tlsListener && c.TLS.ClientCAFile != "" {
		errs = append(errs, errors.New("sip.tls.client_ca_file is set but there is no tls: listener"))
	}
	if h := c.TLS.Handshakes; h.Concurrency < 0 || h.Queue < 0 || h.QueueWait < 0 || h.Timeout < 0 {
		errs = append(errs, errors.New("sip.tls.handshakes: values must not be negative (0 means the default)"))
	}
	for _, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, " :;@/") {
			errs = append(errs, fmt.Errorf("sip.domains %q: want a bare host name", d))
		}
	}
	if _, err := parsePrefixes(c.Trusted); err != nil {
		errs = append(errs, fmt.Errorf("sip.trusted: %w", err))
	}
	names := map[string]bool{}
	for i, t := range c.Trunks {
		if t.Name == "" || names[t.Name] {
			errs = append(errs, fmt.Errorf("sip.trunks[%d]: a unique name is required", i))
		}
		names[t.Name] = true
		if len(t.Sources) == 0 {
			errs = append(errs, fmt.Errorf("sip.trunks[%d] (%s): sources are required", i, t.Name))
		}
		if _, err := parsePrefixes(t.Sources); err != nil {
			errs = append(errs, fmt.Errorf("sip.trunks[%d] (%s): %w", i, t.Name, err))
		}
		if t.Set < 0 || !dispatcher.Algorithm(t.Algorithm).Valid() {
			errs = append(errs, fmt.Errorf("sip.trunks[%d] (%s): bad set or algorithm", i, t.Name))
		}
		if t.Rate < 0 || t.Burst < 0 {
			errs = append(errs, fmt.Errorf("sip.trunks[%d] (%s): rate and burst must not be negative", i, t.Name))
		}
	}
	if c.Auth.Realm == "" || strings.ContainsAny(c.Auth.Realm, "\"\r\n") {
		errs = append(errs, errors.New("sip.auth.realm: required, without quotes or line breaks"))
	}
	if len(c.Auth.Algorithms) == 0 {
		errs = append(errs, errors.New("sip.auth.algorithms: at least one of SHA-256, MD5"))
	}
	for _, a := range c.Auth.Algorithms {
		if !strings.EqualFold(a, "SHA-256") && !strings.EqualFold(a, "MD5") {
			errs = append(errs, fmt.Errorf("sip.auth.algorithms: %q is not SHA-256 or MD5", a))
		}
	}
	if c.Auth.NonceTTL < time.Second {
		errs = append(errs, errors.New("sip.auth.nonce_ttl must be at least 1s"))
	}
	rg := c.Registrar
	if rg.MinExpires <= 0 || rg.MaxExpires < rg.MinExpires || rg.DefaultExpires < rg.MinExpires || rg.DefaultExpires > rg.MaxExpires {
		errs = append(errs, errors.New("sip.registrar: want 0 < min_expires <= default_expires <= max_expires"))
	}
	if rg.MaxContacts < 1 {
		errs = append(errs, errors.New("sip.registrar.max_contacts must be at least 1"))
	}
	if rg.Keepalive < 0 {
		errs = append(errs, errors.New("sip.registrar.keepalive must not be negative (0 turns it off)"))
	}
	g := c.Guard
	if g.Rate < 0 || g.Burst < 0 || g.AuthFailures < 0 || g.BanTime < 0 || g.AuthWindow < 0 {
		errs = append(errs, errors.New("sip.guard: values must not be negative"))
	}
	if g.Rate > 0 && g.Burst < 1 {
		errs = append(errs, errors.New("sip.guard.burst must be at least 1 when rate is set"))
	}
	return errs
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return nil, fmt.Errorf("%q is not a CIDR or address", s)
			}
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
