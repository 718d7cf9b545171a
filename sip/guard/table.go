package guard

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// key is a source as the guard counts it: an IPv4 address, or an IPv6 /64. Two words hash
// faster than a netip.Addr and need no zone.
type key struct{ hi, lo uint64 }

// keyOf takes an unmapped, valid address. IPv4 keeps the ::ffff:0:0/96 form, whose low word is
// never 0, so it cannot meet an IPv6 /64 key (low word always 0).
func keyOf(a netip.Addr) key {
	if a.Is4() {
		b := a.As4()
		return key{lo: 0xffff<<32 | uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return key{hi: binary.BigEndian.Uint64(b[:8])}
}

// banAddr is the address that names a source in bans: the IPv4 address or the /64's first.
func banAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return a
	}
	b := a.As16()
	clear(b[8:])
	return netip.AddrFrom16(b)
}

// source is what the guard knows of one source. Guarded by its shard's mutex. Times are
// nanoseconds since Guard.base.
type source struct {
	tokens float64 // token bucket
	last   int64   // when tokens was brought up to date
	seen   int64

	banUntil int64 // 0: not banned (as far as this node knows)
	banSetAt int64 // when this node learned of the ban

	strikes     int32 // over-limit seconds in the current strike window
	strikeStart int64
	lastStrike  int64

	auth      window // digest failures
	authUser  uint64 // hash of the user all of them were for, unless authMixed
	authMixed bool

	hits uint32 // requests seen, saturating; tells one-packet (spoofed) sources apart
}

// take refills the bucket for the time passed and takes one token if there is one.
func (e *source) take(t int64, c *class) bool {
	if dt := t - e.last; dt > 0 {
		e.tokens = min(e.tokens+float64(dt)*c.perNs, c.burst)
		e.last = t
	}
	if e.tokens >= 1 {
		e.tokens--
		return true
	}
	return false
}

// strike records a dropped request and reports whether the source has now been over its
// limit in `need` different seconds within `win`. Counting seconds, not drops, is what tells
// a flood from a burst: one burst far over the limit is many drops but one strike.
func (e *source) strike(t, win int64, need int) bool {
	if e.strikes > 0 && t-e.lastStrike < int64(time.Second) {
		return false
	}
	if e.strikes == 0 || t-e.strikeStart > win {
		e.strikes, e.strikeStart = 0, t
	}
	e.strikes++
	e.lastStrike = t
	if int(e.strikes) >= need {
		e.strikes = 0
		return true
	}
	return false
}

// stateful reports whether forgetting e would forgive something.
func (e *source) stateful(t int64) bool {
	return e.banUntil > t || e.strikes > 0 || !e.auth.empty()
}

// window counts events over a sliding window, estimated from two fixed ones (the previous
// window's count weighted by how much of it still overlaps). Exact enough for thresholds, in
// 16 bytes instead of a timestamp per event.
type window struct {
	start     int64
	cur, prev uint32
}

func (w *window) empty() bool { return w.cur == 0 && w.prev == 0 }

func (w *window) roll(t, size int64) {
	if w.empty() {
		w.start = t
		return
	}
	d := t - w.start
	if d < size {
		return
	}
	if d < 2*size {
		w.prev = w.cur
	} else {
		w.prev = 0
	}
	w.cur = 0
	w.start = t - d%size
}

// add records one event at t and returns the count over the last size.
func (w *window) add(t, size int64) float64 {
	w.roll(t, size)
	if w.cur < 1<<31 {
		w.cur++
	}
	return float64(w.prev)*(1-float64(t-w.start)/float64(size)) + float64(w.cur)
}

// shard is one lock's worth of sources. Sharding keeps Check from serialising on one mutex
// across cores; the counters live here too, so a drop costs no contended atomic either.
type shard struct {
	mu  sync.Mutex
	m   map[key]*source
	cap int

	dropRate, dropBanned, dropScanner, evictions atomic.Uint64
	_                                            [64]byte // keep neighbours off this cache line
}

// evictionSample is how many entries a full shard looks at to choose one to forget, and
// evictionSampleMax how far it keeps looking while it has found only sources worth keeping.
const (
	evictionSample    = 5
	evictionSampleMax = 32
)

// evict forgets one source of a full shard and returns its struct for reuse. It samples
// entries (map iteration starts at a random place) and picks, in order: one idle for long,
// one seen only once and holding nothing (what a spoofed-source flood is made of), one holding
// nothing, then the oldest. A source that talks to us regularly therefore survives a flood of
// one-packet sources, forgetting a source with state (strikes, failures, a ban) would forgive
// it only if the whole sample holds state, and the bound holds whatever the traffic.
// Iteration order clusters entries, so when the first few are all worth keeping it looks
// further; that only happens when the table is full of real sources.
func (sh *shard) evict(t, idle int64) *source {
	var (
		vk       key
		victim   *source
		bestTier = 4
		bestSeen int64
		n        int
	)
	for k, e := range sh.m {
		tier := 3
		switch {
		case t-e.seen > idle:
			tier = 0
		case e.stateful(t):
		case e.hits <= 1:
			tier = 1
		default:
			tier = 2
		}
		if tier < bestTier || tier == bestTier && e.seen < bestSeen {
			vk, victim, bestTier, bestSeen = k, e, tier, e.seen
		}
		if n++; tier == 0 || n >= evictionSample && bestTier <= 1 || n >= evictionSampleMax {
			break
		}
	}
	if victim != nil {
		delete(sh.m, vk)
		sh.evictions.Add(1)
	}
	return victim
}
