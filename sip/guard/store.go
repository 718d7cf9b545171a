package guard

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Ban is one banned source.
type Ban struct {
	// Addr is the source as the guard tracks it: an IPv4 address, or the first address of an
	// IPv6 /64 (the whole /64 is banned; see Prefix).
	Addr netip.Addr
	// Since and Until bound the ban; it is over at Until.
	Since time.Time
	Until time.Time
	// Reason is ReasonFlood, ReasonAuth, ReasonAuthUser, or the text an operator gave.
	Reason string
	// User is the user name of the digest failure that caused an auth ban, for the log; the
	// ban is never a ban of the user.
	User string
}

// Ban reasons set by the guard itself.
const (
	ReasonFlood    = "flood"     // kept exceeding its request rate
	ReasonAuth     = "auth"      // too many digest failures from this source
	ReasonAuthUser = "auth_user" // failed for a user who is failing from many sources
	ReasonAdmin    = "admin"     // an operator's ban given no reason
)

// Prefix is what the ban covers: the IPv4 address, or the IPv6 /64.
func (b Ban) Prefix() netip.Prefix {
	if b.Addr.Is4() {
		return netip.PrefixFrom(b.Addr, 32)
	}
	p, _ := b.Addr.Prefix(64)
	return p
}

// Active reports whether the ban still holds at now.
func (b Ban) Active(now time.Time) bool { return now.Before(b.Until) }

// BanStore keeps the ban list. The guard gives it addresses already normalised (IPv4, or
// IPv6 masked to its /64) and keeps its own copy of the bans of the sources it tracks, so the
// store is read once per source the guard starts tracking, not once per request. It is an
// interface so that several nodes can share one list later (Redis). Banned is called with a
// guard lock held, on the request path: an implementation must answer it from memory and must
// not block. Methods are called concurrently.
type BanStore interface {
	// Ban adds or replaces the ban of b.Addr.
	Ban(b Ban)
	// Banned returns the active ban of addr, if any.
	Banned(addr netip.Addr) (Ban, bool)
	// Lift removes the ban of addr and reports whether an active one was there.
	Lift(addr netip.Addr) bool
	// List returns the active bans, in no particular order.
	List() []Ban
}

// MemoryStore is the single-node BanStore. It holds a bounded number of bans: when a new ban finds it
// full, the ban that would end first makes room, so a flood of bans (each needs a flood or
// failed logins of its own, but addresses can be spoofed) cannot grow it without bound.
type MemoryStore struct {
	clock func() time.Time
	max   int
	n     atomic.Int64 // len(m), read without the lock: nearly always 0 when nobody is banned

	mu sync.RWMutex
	m  map[netip.Addr]Ban
}

// NewMemoryStore returns an empty store holding at most limit bans (at least 1). A nil clock
// means time.Now.
func NewMemoryStore(limit int, clock func() time.Time) *MemoryStore {
	if clock == nil {
		clock = time.Now
	}
	return &MemoryStore{clock: clock, max: max(limit, 1), m: map[netip.Addr]Ban{}}
}

// Ban implements BanStore.
func (s *MemoryStore) Ban(b Ban) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[b.Addr]; !ok && len(s.m) >= s.max {
		s.purge(s.clock())
		if len(s.m) >= s.max {
			var first netip.Addr
			var until time.Time
			for a, x := range s.m {
				if !first.IsValid() || x.Until.Before(until) {
					first, until = a, x.Until
				}
			}
			delete(s.m, first)
		}
	}
	s.m[b.Addr] = b
	s.n.Store(int64(len(s.m)))
}

// Banned implements BanStore.
func (s *MemoryStore) Banned(addr netip.Addr) (Ban, bool) {
	if s.n.Load() == 0 {
		return Ban{}, false
	}
	s.mu.RLock()
	b, ok := s.m[addr]
	s.mu.RUnlock()
	if !ok || !b.Active(s.clock()) {
		return Ban{}, false
	}
	return b, true
}

// Lift implements BanStore.
func (s *MemoryStore) Lift(addr netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[addr]
	delete(s.m, addr)
	s.n.Store(int64(len(s.m)))
	return ok && b.Active(s.clock())
}

// List implements BanStore. It also forgets the bans that are over.
func (s *MemoryStore) List() []Ban {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(s.clock())
	out := make([]Ban, 0, len(s.m))
	for _, b := range s.m {
		out = append(out, b)
	}
	return out
}

func (s *MemoryStore) purge(now time.Time) {
	for a, b := range s.m {
		if !b.Active(now) {
			delete(s.m, a)
		}
	}
	s.n.Store(int64(len(s.m)))
}
