// Package guard is the SIP plane's flood and abuse protection: what a Kamailio edge builds
// from pike (a request rate per source), htable (a ban list read before anything else),
// fail2ban (bans after repeated digest failures) and a User-Agent filter for well-known
// scanners.
//
// The router calls Check for every inbound request before doing any work on it, so Check is
// built for the hot path: a known source costs one shard lock, one map lookup and some
// arithmetic, and allocates nothing. What the guard refuses is dropped without an answer: an
// answer tells a scanner that a SIP server listens here, and spends on the attacker the
// bandwidth the flood is trying to take.
//
// # Sources
//
// A source is an IPv4 address or an IPv6 /64. One host, or one subscriber line, owns a whole
// /64 (RFC 6177, SLAAC, privacy addresses): counting IPv6 addresses one by one would give an
// attacker 2^64 fresh buckets and fill the table with one machine. IPv4-mapped IPv6 addresses
// count as the IPv4 address they map. The cost is that hosts sharing a /64 share a bucket and
// a ban; give a /64 holding many devices a class.
//
// # Floods
//
// Every request takes a token from its source's bucket (Rate per second, Burst deep). Without
// a token the request is dropped (Limited). Dropping continues for as long as the excess lasts;
// a ban needs persistence: a source that is over its limit in Strikes different seconds
// within StrikeWindow is banned for BanTime. A phone's retransmission burst or a PBX
// re-registering its lines loses some requests and recovers; a flood is shut out and then
// costs us one map lookup per packet. A ban is not extended by traffic during it: extending
// would write to the ban store once per dropped packet.
//
// # Digest failures
//
// AuthFailures failures from one source within AuthWindow ban the source (fail2ban). Password
// guessing spread over many sources is caught per user: once a user has had AuthFailuresUser
// failures within AuthWindow, from anywhere, every further source that fails for that user is
// banned at its first failure. The user is never locked out: that would let anyone lock out any
// account they know the name of, and the user's own phone, which does not fail, keeps working.
//
// Only real failures should be reported: a wrong answer to a nonce we issued to that source.
// Over UDP the source address is not proven, so counting answers to unknown or stale nonces
// would let anyone get any address banned with a few spoofed packets.
//
// # What is never banned
//
// Exempt prefixes (the cluster, monitoring) skip the guard entirely. Classes (trunks) get
// their own bucket size and may be marked NoBan: a carrier's address can be spoofed too, and
// banning it would stop every call it brings.
//
// # Scanners
//
// A request whose User-Agent contains a scanner name is dropped (Scanner) but its source is
// not banned: the User-Agent costs nothing to forge, so one spoofed packet would otherwise ban
// any address, a trunk's included. Scanners that also flood are banned for the flood.
package guard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Guard. New uses the fields as given (start from DefaultConfig); a zero
// duration or size that cannot mean "off" means its default.
type Config struct {
	// Rate and Burst are each source's token bucket: Rate requests per second on average,
	// Burst at once. Rate 0 turns rate limiting (and so flood bans) off. Default 50/s, 100.
	Rate  float64
	Burst int
	// Strikes is how many different seconds a source must spend over its rate within
	// StrikeWindow to be banned for flooding; 0 drops the excess but never bans. Default 3 in
	// 10s: about three seconds of sustained flood.
	Strikes      int
	StrikeWindow time.Duration
	// BanTime is how long a ban lasts. Default (and when 0) 10m.
	BanTime time.Duration
	// AuthFailures digest failures from one source within AuthWindow ban it; 0: never.
	// Default 10 in 5m (AuthWindow 0 means 5m).
	AuthFailures int
	AuthWindow   time.Duration
	// AuthFailuresUser failures for one user within AuthWindow, from any sources, make every
	// further source failing for that user banned at its first failure. The user is not
	// locked out. 0: no per-user counting. Default 10.
	AuthFailuresUser int
	// ScannerUserAgents are User-Agent substrings (ASCII case-insensitive) whose requests are
	// dropped. Empty: none. Default DefaultScannerUserAgents().
	ScannerUserAgents []string
	// Exempt prefixes are never limited, banned or filtered. Exempt wins over a class.
	Exempt []netip.Prefix
	// Classes give sources in their prefixes their own bucket (still one per source). The
	// longest matching prefix wins.
	Classes []Class
	// MaxSources bounds the sources tracked, and so the memory a flood from spoofed addresses
	// can take (about 150 bytes each). When it is reached, one-packet sources are forgotten
	// first. Default (and when 0) 100000.
	MaxSources int
	// Store holds the ban list. Default (nil): a MemoryStore of MaxSources bans.
	Store BanStore
	// OnBan, if set, is called for every new ban (not for bans found in the store), without
	// locks held but on the request path: log and return.
	OnBan func(Ban)
}

// Class is a group of sources with their own limits, such as a trunk.
type Class struct {
	Name string
	// Prefixes of the class. An IPv6 prefix longer than /64 is widened to its /64, because
	// the /64 is what the guard counts.
	Prefixes []netip.Prefix
	// Rate and Burst replace Config's for each source in the class. Rate 0: no limit.
	Rate  float64
	Burst int
	// NoBan: sources in the class are rate limited but never banned automatically (an
	// operator may still ban them).
	NoBan bool
}

// Defaults.
const (
	DefaultRate             = 50
	DefaultBurst            = 100
	DefaultStrikes          = 3
	DefaultStrikeWindow     = 10 * time.Second
	DefaultBanTime          = 10 * time.Minute
	DefaultAuthFailures     = 10
	DefaultAuthFailuresUser = 10
	DefaultAuthWindow       = 5 * time.Minute
	DefaultMaxSources       = 100000
)

// DefaultConfig returns the defaults: 50 requests/s with bursts of 100 per source, a 10m ban
// after 3 seconds over that within 10s or after 10 digest failures within 5m, and the default
// scanner list.
func DefaultConfig() Config {
	return Config{
		Rate: DefaultRate, Burst: DefaultBurst,
		Strikes: DefaultStrikes, StrikeWindow: DefaultStrikeWindow, BanTime: DefaultBanTime,
		AuthFailures: DefaultAuthFailures, AuthFailuresUser: DefaultAuthFailuresUser,
		AuthWindow:        DefaultAuthWindow,
		ScannerUserAgents: DefaultScannerUserAgents(),
		MaxSources:        DefaultMaxSources,
	}
}

// Verdict is what to do with a request.
type Verdict uint8

// Verdicts. Everything but Allow means: drop silently.
const (
	Allow   Verdict = iota
	Limited         // over its rate
	Banned          // the source is banned
	Scanner         // a scanner's User-Agent
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Limited:
		return "limited"
	case Banned:
		return "banned"
	case Scanner:
		return "scanner"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// class is a resolved bucket shape.
type class struct {
	perNs  float64 // tokens per nanosecond; 0: unlimited
	burst  float64
	noBan  bool
	exempt bool
}

// rule matches a prefix as masks over the 16-byte form of the address (IPv4 as ::ffff:a.b.c.d).
type rule struct {
	hi, lo, mhi, mlo uint64
	is4              bool
	c                *class
	bits             int // of the prefix as configured, for ordering
}

func newRule(p netip.Prefix, c *class) rule {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	mask := func(n int) uint64 { // the top n of 64 bits
		switch {
		case n <= 0:
			return 0
		case n >= 64:
			return ^uint64(0)
		}
		return ^uint64(0) << (64 - n)
	}
	b := p.Masked().Addr().As16()
	return rule{
		hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]),
		mhi: mask(bits), mlo: mask(bits - 64),
		is4: p.Addr().Is4(), c: c, bits: p.Bits(),
	}
}

// Guard is the flood and abuse protection of one node. Its methods are safe for concurrent use.
type Guard struct {
	clock func() time.Time // nil: the process clock, read through time.Since
	base  time.Time        // times inside are nanoseconds since base (monotonic when the clock is)

	def, exempt class
	rules       []rule // exempt prefixes, then class prefixes longest first

	strikes      int
	strikeWindow int64
	banTime      time.Duration
	authFailures int
	authUser     int
	authWindow   int64
	idle         int64 // a source unseen this long holds nothing worth keeping

	scan  *scanner
	store BanStore
	onBan func(Ban)
	seed  maphash.Seed
	salt  uint64

	shards []shard
	shift  uint

	users users
	m     *metrics
}

// users counts digest failures per user name.
type users struct {
	mu  sync.Mutex
	m   map[string]*window
	max int
}

// maxUserLen bounds the part of a user name kept as a key: names come from the attacker.
const maxUserLen = 128

// New checks cfg and returns a Guard. A nil clock is the real clock; tests pass a fake one.
// (nil is also faster than time.Now: Check then reads only the monotonic clock.) A nil reg
// registers nothing.
func New(cfg Config, clock func() time.Time, reg prometheus.Registerer) (*Guard, error) {
	def, err := newClass("guard", cfg.Rate, cfg.Burst, false)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Strikes < 0:
		return nil, errors.New("guard: strikes must not be negative")
	case cfg.AuthFailures < 0 || cfg.AuthFailuresUser < 0:
		return nil, errors.New("guard: auth failure limits must not be negative")
	case cfg.StrikeWindow < 0 || cfg.BanTime < 0 || cfg.AuthWindow < 0:
		return nil, errors.New("guard: durations must not be negative")
	case cfg.MaxSources < 0:
		return nil, errors.New("guard: max sources must not be negative")
	}
	g := &Guard{
		clock:        clock,
		base:         time.Now(),
		def:          def,
		exempt:       class{exempt: true},
		strikes:      cfg.Strikes,
		strikeWindow: int64(cmp0(cfg.StrikeWindow, DefaultStrikeWindow)),
		banTime:      cmp0(cfg.BanTime, DefaultBanTime),
		authFailures: cfg.AuthFailures,
		authUser:     cfg.AuthFailuresUser,
		authWindow:   int64(cmp0(cfg.AuthWindow, DefaultAuthWindow)),
		store:        cfg.Store,
		onBan:        cfg.OnBan,
		seed:         maphash.MakeSeed(),
		salt:         rand.Uint64(),
	}
	if clock != nil {
		g.base = clock()
	}
	g.idle = max(2*g.authWindow, g.strikeWindow, int64(time.Minute))
	if g.scan, err = newScanner(cfg.ScannerUserAgents); err != nil {
		return nil, err
	}
	for _, p := range cfg.Exempt {
		if !p.IsValid() {
			return nil, fmt.Errorf("guard: exempt prefix %v is not valid", p)
		}
		g.rules = append(g.rules, newRule(unmapPrefix(p), &g.exempt))
	}
	var classes []rule
	for _, c := range cfg.Classes {
		rc, err := newClass("class "+c.Name, c.Rate, c.Burst, c.NoBan)
		if err != nil {
			return nil, err
		}
		if len(c.Prefixes) == 0 {
			return nil, fmt.Errorf("guard: class %s has no prefixes", c.Name)
		}
		for _, p := range c.Prefixes {
			if !p.IsValid() {
				return nil, fmt.Errorf("guard: class %s: prefix %v is not valid", c.Name, p)
			}
			p = unmapPrefix(p)
			if p.Addr().Is6() && p.Bits() > 64 {
				p = netip.PrefixFrom(p.Addr(), 64).Masked()
			}
			classes = append(classes, newRule(p, &rc))
		}
	}
	slices.SortStableFunc(classes, func(a, b rule) int { return b.bits - a.bits })
	g.rules = append(g.rules, classes...)

	maxSources := cfg.MaxSources
	if maxSources == 0 {
		maxSources = DefaultMaxSources
	}
	if g.store == nil {
		g.store = NewMemoryStore(maxSources, clock)
	}
	// A power of two up to 256 shards, each holding at least 32 sources so that eviction
	// has something to choose from.
	n := 1
	for n < 256 && n*2*32 <= maxSources {
		n *= 2
	}
	g.shift = 64 - uint(log2(n))
	g.shards = make([]shard, n)
	for i := range g.shards {
		g.shards[i].cap = max(maxSources/n, 1)
		g.shards[i].m = make(map[key]*source, min(g.shards[i].cap, 1024))
	}
	g.users = users{m: map[string]*window{}, max: maxSources}
	if g.m, err = newMetrics(g, reg); err != nil {
		return nil, err
	}
	g.m.banned.Set(float64(len(g.store.List()))) // a shared store may hold bans already
	return g, nil
}

func newClass(name string, rate float64, burst int, noBan bool) (class, error) {
	switch {
	case rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0):
		return class{}, fmt.Errorf("guard: %s: rate %v is not a finite non-negative number", name, rate)
	case rate > 0 && burst < 1:
		return class{}, fmt.Errorf("guard: %s: burst must be at least 1 when rate is set", name)
	}
	return class{perNs: rate / 1e9, burst: float64(burst), noBan: noBan}, nil
}

func cmp0(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func log2(n int) int {
	b := 0
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

// unmapPrefix writes an IPv4-mapped IPv6 prefix as the IPv4 prefix, since addresses are
// unmapped before matching.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// classify finds the class of a, exempt first, then the longest class prefix. The rules
// are plain masks, not netip.Prefix: Contains costs several times more, and trunk lists can
// be long.
func (g *Guard) classify(a netip.Addr) *class {
	if len(g.rules) == 0 {
		return &g.def
	}
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	is4 := a.Is4()
	for i := range g.rules {
		r := &g.rules[i]
		if hi&r.mhi == r.hi && lo&r.mlo == r.lo && r.is4 == is4 {
			return r.c
		}
	}
	return &g.def
}

// elapsed is the guard's time: nanoseconds since base.
func (g *Guard) elapsed() int64 {
	if g.clock == nil {
		return int64(time.Since(g.base)) // one monotonic read; time.Now reads the wall clock too
	}
	return int64(g.clock().Sub(g.base))
}

// wall is the time.Time of the guard's time t, for bans.
func (g *Guard) wall(t int64) time.Time { return g.base.Add(time.Duration(t)) }

func (g *Guard) now() (time.Time, int64) {
	t := g.elapsed()
	return g.wall(t), t
}

func (g *Guard) shardOf(k key) *shard {
	// A salted mix: without the salt, someone choosing spoofed addresses could aim them all
	// at one shard and churn only the sources that live there.
	h := (k.hi ^ g.salt) * 0x9e3779b97f4a7c15
	h = (h ^ k.lo) * 0xbf58476d1ce4e5b9
	h ^= h >> 31
	return &g.shards[h>>g.shift&uint64(len(g.shards)-1)]
}

// lookup returns the source of k, tracking it if new. Call with sh.mu held.
func (g *Guard) lookup(sh *shard, k key, a netip.Addr, t int64, c *class) *source {
	if e := sh.m[k]; e != nil {
		return e
	}
	var e *source
	if len(sh.m) >= sh.cap {
		e = sh.evict(t, g.idle)
	}
	if e == nil {
		e = new(source)
	} else {
		*e = source{}
	}
	e.tokens, e.last, e.seen = c.burst, t, t
	// A source we forgot (evicted, swept, or banned by another node) may still be banned.
	if b, ok := g.store.Banned(banAddr(a)); ok {
		if until := int64(b.Until.Sub(g.base)); until > t {
			e.banUntil, e.banSetAt = until, t
		}
	}
	sh.m[k] = e
	return e
}

// Check decides on one inbound request (never a response) from src with the given
// User-Agent ("" when there is none). Anything but Allow: drop it without answering. The
// request that gets its source banned for flooding is reported Limited; the next ones Banned.
func (g *Guard) Check(src netip.Addr, userAgent string) Verdict {
	a := src.Unmap()
	if !a.IsValid() {
		return Allow // nothing to count it against; the transport always knows the source
	}
	c := g.classify(a)
	if c.exempt {
		return Allow
	}
	t := g.elapsed()
	k := keyOf(a)
	sh := g.shardOf(k)
	sh.mu.Lock()
	e := g.lookup(sh, k, a, t, c)
	e.seen = t
	if e.hits < math.MaxUint32 {
		e.hits++
	}
	if e.banUntil != 0 {
		if t < e.banUntil {
			sh.mu.Unlock()
			sh.dropBanned.Add(1)
			return Banned
		}
		e.banUntil = 0
	}
	if c.perNs > 0 && !e.take(t, c) {
		ban := !c.noBan && g.strikes > 0 && e.strike(t, g.strikeWindow, g.strikes)
		if ban {
			g.banLocked(e, t)
		}
		sh.mu.Unlock()
		sh.dropRate.Add(1)
		if ban {
			now := g.wall(t)
			g.commit(Ban{Addr: banAddr(a), Since: now, Until: now.Add(g.banTime), Reason: ReasonFlood}, g.m.banFlood)
		}
		return Limited
	}
	sh.mu.Unlock()
	if userAgent != "" && g.scan != nil && g.scan.match(userAgent) {
		sh.dropScanner.Add(1)
		return Scanner
	}
	return Allow
}

// banLocked marks e banned on this node and clears what led there. Call with the shard lock.
func (g *Guard) banLocked(e *source, t int64) {
	e.banUntil, e.banSetAt = t+int64(g.banTime), t
	e.strikes = 0
	e.auth = window{}
}

// commit records a new ban beyond the source table: store, metrics, hook.
func (g *Guard) commit(b Ban, c prometheus.Counter) {
	g.store.Ban(b)
	c.Inc()
	g.m.banned.Inc()
	if g.onBan != nil {
		g.onBan(b)
	}
}

// AuthFailed records a digest failure (a wrong answer to a nonce we issued to src, or a
// replay) from src for user, and reports whether it got src banned. See the package documentation
// for the per-user rule. user may be "" when unknown: then only the source is counted.
func (g *Guard) AuthFailed(src netip.Addr, user string) bool {
	g.m.authFailures.Inc()
	a := src.Unmap()
	if !a.IsValid() {
		return false
	}
	now, t := g.now()
	hotUser := g.userFailed(user, t)
	if g.authFailures == 0 && !hotUser {
		return false
	}
	c := g.classify(a)
	if c.exempt || c.noBan {
		return false
	}
	uh := maphash.String(g.seed, user)
	k := keyOf(a)
	sh := g.shardOf(k)
	sh.mu.Lock()
	e := g.lookup(sh, k, a, t, c)
	if e.banUntil > t {
		sh.mu.Unlock()
		return false
	}
	var reason string
	if g.authFailures > 0 {
		e.auth.roll(t, g.authWindow)
		if e.auth.empty() {
			e.authUser, e.authMixed = uh, false
		} else if e.authUser != uh {
			e.authMixed = true
		}
		if e.auth.add(t, g.authWindow) >= float64(g.authFailures) {
			reason = ReasonAuth
		}
	}
	if reason == "" && hotUser {
		reason = ReasonAuthUser
	}
	if reason == "" {
		sh.mu.Unlock()
		return false
	}
	g.banLocked(e, t)
	sh.mu.Unlock()
	ctr := g.m.banAuth
	if reason == ReasonAuthUser {
		ctr = g.m.banAuthUser
	}
	g.commit(Ban{Addr: banAddr(a), Since: now, Until: now.Add(g.banTime), Reason: reason,
		User: truncate(user, maxUserLen)}, ctr)
	return true
}

// userFailed counts a failure for user and reports whether the user is now over
// AuthFailuresUser.
func (g *Guard) userFailed(user string, t int64) bool {
	if g.authUser == 0 || user == "" {
		return false
	}
	user = truncate(user, maxUserLen)
	u := &g.users
	u.mu.Lock()
	defer u.mu.Unlock()
	w := u.m[user]
	if w == nil {
		if len(u.m) >= u.max {
			// Names are the attacker's to choose: forget the oldest of a few, as for sources.
			var old string
			var start int64 = math.MaxInt64
			n := 0
			for name, x := range u.m {
				if x.start < start {
					old, start = name, x.start
				}
				if n++; n == evictionSample {
					break
				}
			}
			delete(u.m, old)
		}
		w = new(window)
		u.m[strings.Clone(user)] = w // the name may be a slice of a whole SIP message
	}
	return w.add(t, g.authWindow) >= float64(g.authUser)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// AuthSucceeded records a successful digest answer from src for user. It clears the source's
// failure count only when every failure counted was for this same user: that is a phone whose
// password was fixed. A source that failed for other users keeps its count, or an attacker
// holding one valid account could wipe its record between guesses. The per-user count is
// never cleared by a success: the real user's phone re-registering would otherwise reset it
// for the guessers every few minutes.
func (g *Guard) AuthSucceeded(src netip.Addr, user string) {
	a := src.Unmap()
	if !a.IsValid() || g.authFailures == 0 {
		return
	}
	uh := maphash.String(g.seed, user)
	k := keyOf(a)
	sh := g.shardOf(k)
	sh.mu.Lock()
	if e := sh.m[k]; e != nil && !e.authMixed && e.authUser == uh {
		e.auth = window{}
	}
	sh.mu.Unlock()
}

// Ban bans addr (IPv6: its /64) for d, as an operator. reason "" means "admin".
func (g *Guard) Ban(addr netip.Addr, d time.Duration, reason string) (Ban, error) {
	a := addr.Unmap()
	if !a.IsValid() {
		return Ban{}, errors.New("guard: no address to ban")
	}
	if d <= 0 {
		return Ban{}, errors.New("guard: ban duration must be positive")
	}
	if g.classify(a).exempt {
		return Ban{}, fmt.Errorf("guard: %v is exempt; remove it from the exempt list first", a)
	}
	if reason == "" {
		reason = ReasonAdmin
	}
	now, t := g.now()
	b := Ban{Addr: banAddr(a), Since: now, Until: now.Add(d), Reason: reason}
	_, already := g.store.Banned(b.Addr)
	g.store.Ban(b)
	k := keyOf(a)
	sh := g.shardOf(k)
	sh.mu.Lock()
	if e := sh.m[k]; e != nil {
		e.banUntil, e.banSetAt = int64(b.Until.Sub(g.base)), t
	}
	sh.mu.Unlock()
	g.m.banAdmin.Inc()
	if !already {
		g.m.banned.Inc()
	}
	if g.onBan != nil {
		g.onBan(b)
	}
	return b, nil
}

// Lift ends the ban of addr (IPv6: its /64) and forgets what the guard counted against it, so
// it starts afresh. It reports whether there was an active ban.
func (g *Guard) Lift(addr netip.Addr) bool {
	a := addr.Unmap()
	if !a.IsValid() {
		return false
	}
	_, t := g.now()
	ok := g.store.Lift(banAddr(a))
	k := keyOf(a)
	sh := g.shardOf(k)
	sh.mu.Lock()
	if e := sh.m[k]; e != nil {
		ok = ok || e.banUntil > t
		delete(sh.m, k)
	}
	sh.mu.Unlock()
	if ok {
		g.m.banned.Dec()
	}
	return ok
}

// Bans returns the active bans, newest first.
func (g *Guard) Bans() []Ban {
	now, _ := g.now()
	bans := slices.DeleteFunc(g.store.List(), func(b Ban) bool { return !b.Active(now) })
	slices.SortFunc(bans, func(x, y Ban) int {
		if c := y.Since.Compare(x.Since); c != 0 {
			return c
		}
		return x.Addr.Compare(y.Addr)
	})
	return bans
}

// SweepInterval is how often Run tidies up.
const SweepInterval = 5 * time.Second

// Run sweeps every SweepInterval until ctx ends.
func (g *Guard) Run(ctx context.Context) {
	tk := time.NewTicker(SweepInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			g.Sweep()
		}
	}
}

// syncGrace keeps Sweep from undoing a ban made while it read the store: only local bans
// older than this are dropped for not being in the store.
const syncGrace = int64(time.Second)

// Sweep forgets idle sources and user counts, drops ended bans from the store, corrects the
// banned gauge and brings the bans of tracked sources in line with the store (bans made or
// lifted by other nodes sharing it). Run calls it; it is exported for tests and admin use.
func (g *Guard) Sweep() {
	_, t := g.now()
	active := g.store.List()
	g.m.banned.Set(float64(len(active)))
	byKey := make(map[key]int64, len(active))
	for _, b := range active {
		if a := b.Addr.Unmap(); a.IsValid() {
			byKey[keyOf(a)] = int64(b.Until.Sub(g.base))
		}
	}
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if t-e.seen > g.idle {
				delete(sh.m, k)
				continue
			}
			if until, ok := byKey[k]; ok && until > t {
				if e.banUntil == 0 {
					e.banSetAt = t
				}
				e.banUntil = until
			} else if e.banUntil != 0 && e.banSetAt < t-syncGrace {
				e.banUntil = 0
			}
		}
		sh.mu.Unlock()
	}
	u := &g.users
	u.mu.Lock()
	for name, w := range u.m {
		if t-w.start > 2*g.authWindow {
			delete(u.m, name)
		}
	}
	u.mu.Unlock()
}

type stats struct{ rate, banned, scanner, evictions, sources uint64 }

func (g *Guard) stats() stats {
	var s stats
	for i := range g.shards {
		sh := &g.shards[i]
		s.rate += sh.dropRate.Load()
		s.banned += sh.dropBanned.Load()
		s.scanner += sh.dropScanner.Load()
		s.evictions += sh.evictions.Load()
		sh.mu.Lock()
		s.sources += uint64(len(sh.m))
		sh.mu.Unlock()
	}
	return s
}
