package dispatcher

import (
	"cmp"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Algorithm numbers are Kamailio's, so an operator's habits and docs carry over.
type Algorithm int

const (
	AlgHashCallID     Algorithm = 0
	AlgHashFrom       Algorithm = 1
	AlgHashTo         Algorithm = 2
	AlgHashRURIUser   Algorithm = 3
	AlgRoundRobin     Algorithm = 4
	AlgHashAuthUser   Algorithm = 5
	AlgRandom         Algorithm = 6
	AlgPriority       Algorithm = 8
	AlgWeight         Algorithm = 9
	AlgCallLoad       Algorithm = 10
	AlgRelativeWeight Algorithm = 11
	AlgLatency        Algorithm = 13
)

// Valid reports whether the algorithm number is one we implement.
func (a Algorithm) Valid() bool {
	switch a {
	case AlgHashCallID, AlgHashFrom, AlgHashTo, AlgHashRURIUser, AlgRoundRobin, AlgHashAuthUser,
		AlgRandom, AlgPriority, AlgWeight, AlgCallLoad, AlgRelativeWeight, AlgLatency:
		return true
	}
	return false
}

// Key carries the request values the hashing algorithms read.
type Key struct {
	CallID   string
	FromURI  string
	ToURI    string
	RURIUser string
	AuthUser string
}

// Set is a group of interchangeable destinations.
type Set struct {
	ID    int
	Dests []*Destination // sorted by priority, highest first

	rr      atomic.Uint64
	weights []int // one cycle of destination indexes in smooth weighted order (algorithm 9)

	swrrMu  sync.Mutex
	swrrCur []int // running scores of smooth weighted round-robin (algorithm 11)
}

func (s *Set) prepare() {
	sort.SliceStable(s.Dests, func(i, j int) bool { return s.Dests[i].Priority > s.Dests[j].Priority })
	total := 0
	for _, d := range s.Dests {
		total += d.Weight
	}
	// One full cycle of smooth weighted round-robin: a 3:1 split comes out as a,a,b,a rather
	// than a,a,a,b, so short bursts are spread too.
	cur := make([]int, len(s.Dests))
	s.weights = make([]int, 0, total)
	for range total {
		best := 0
		for i, d := range s.Dests {
			cur[i] += d.Weight
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		s.weights = append(s.weights, best)
	}
	s.swrrCur = make([]int, len(s.Dests))
}

// Dispatcher holds the sets and picks destinations for new calls. Reads are lock-free; the
// set table is replaced whole on reload.
type Dispatcher struct {
	sets    atomic.Pointer[map[int]*Set]
	addrs   atomic.Pointer[map[netip.Addr]bool] // IP of every destination: the cluster's sources
	mu      sync.Mutex                          // serialises reloads and administrative state changes
	log     *slog.Logger
	metrics *Metrics
}

// New builds a dispatcher from destination specs.
func New(specs []Spec, log *slog.Logger, m *Metrics) (*Dispatcher, error) {
	sets, err := build(specs)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{log: log, metrics: m}
	d.sets.Store(&sets)
	d.addrs.Store(addrIndex(sets))
	d.publishStates()
	return d, nil
}

// Reload replaces every set all-or-nothing: a bad list changes nothing. Destinations that stay
// keep their live calls, latency history and probe verdict.
func (d *Dispatcher) Reload(specs []Spec) error {
	next, err := build(specs)
	if err != nil {
		return fmt.Errorf("dispatcher reload rejected: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := map[string]*Destination{}
	for _, set := range *d.sets.Load() {
		for _, dst := range set.Dests {
			old[dst.key()] = dst
		}
	}
	for _, set := range next {
		for _, dst := range set.Dests {
			prev, ok := old[dst.key()]
			if !ok {
				continue
			}
			// Share the counter rather than copy it: calls placed before the reload end
			// (CallEnded) on the old object, which the dialog tracker still holds.
			dst.calls = prev.calls
			dst.rtt.Store(prev.rtt.Load())
			prev.probeMu.Lock()
			dst.probeFails, dst.probeOKs, dst.lastProbe, dst.lastReason = prev.probeFails, prev.probeOKs, prev.lastProbe, prev.lastReason
			prev.probeMu.Unlock()
			if dst.State() == Active && prev.State() == Inactive {
				dst.state.Store(int32(Inactive))
			}
		}
	}
	d.sets.Store(&next)
	d.addrs.Store(addrIndex(next))
	d.metrics.forgetDestinations()
	d.publishStates()
	d.log.Info("dispatcher reloaded", "sets", len(next))
	return nil
}

// IsDestination reports whether ip is the address of a destination in any set, whatever its
// state: requests from the cluster are recognised by source address, as Kamailio's
// ds_is_from_list does. Destinations given by host name are not resolved here.
func (d *Dispatcher) IsDestination(ip netip.Addr) bool {
	return (*d.addrs.Load())[ip.Unmap()]
}

func addrIndex(sets map[int]*Set) *map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, set := range sets {
		for _, dst := range set.Dests {
			if ip, err := netip.ParseAddr(strings.Trim(dst.Host, "[]")); err == nil {
				m[ip.Unmap()] = true
			}
		}
	}
	return &m
}

// Sets returns the current sets ordered by id (a snapshot; destinations are live objects).
func (d *Dispatcher) Sets() []*Set {
	m := *d.sets.Load()
	out := make([]*Set, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *Set) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Find returns the destination with this URI in set setID.
func (d *Dispatcher) Find(setID int, uri string) *Destination {
	set := (*d.sets.Load())[setID]
	if set == nil {
		return nil
	}
	for _, dst := range set.Dests {
		if dst.URI == uri {
			return dst
		}
	}
	return nil
}

// SetState changes a destination's administrative state (drain, disable, enable).
func (d *Dispatcher) SetState(setID int, uri string, st State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dst := d.Find(setID, uri)
	if dst == nil {
		return fmt.Errorf("set %d has no destination %s", setID, uri)
	}
	d.transition(dst, st, "administrative change")
	return nil
}

func (d *Dispatcher) transition(dst *Destination, st State, reason string) {
	prev := State(dst.state.Swap(int32(st)))
	if prev == st {
		return
	}
	d.log.Info("destination state changed", "backend", dst.URI, "set", dst.SetID,
		"from", prev.String(), "to", st.String(), "reason", reason)
	d.metrics.setState(dst, st)
}

func (d *Dispatcher) publishStates() {
	for _, set := range *d.sets.Load() {
		for _, dst := range set.Dests {
			d.metrics.setState(dst, dst.State())
		}
	}
}

// Select returns the destinations to try for a new call, first choice first, then the
// failover order. Only destinations that may take a call now are included; an empty result
// means the set has nothing to offer. The result reuses buf's storage (buf[:0]), so a caller
// with a stack buffer pays no allocation.
func (d *Dispatcher) Select(setID int, alg Algorithm, k *Key, buf []*Destination) []*Destination {
	set := (*d.sets.Load())[setID]
	if set == nil || len(set.Dests) == 0 {
		return buf[:0]
	}
	out := buf[:0]
	n := len(set.Dests)
	switch alg {
	case AlgHashCallID:
		out = ring(set, int(hash(k.CallID)%uint32(n)), out)
	case AlgHashFrom:
		out = ring(set, int(hash(k.FromURI)%uint32(n)), out)
	case AlgHashTo:
		out = ring(set, int(hash(k.ToURI)%uint32(n)), out)
	case AlgHashRURIUser:
		out = ring(set, int(hash(k.RURIUser)%uint32(n)), out)
	case AlgHashAuthUser:
		out = ring(set, int(hash(k.AuthUser)%uint32(n)), out)
	case AlgRandom:
		out = ring(set, rand.IntN(n), out)
	case AlgPriority:
		out = ring(set, 0, out)
	case AlgWeight:
		if len(set.weights) == 0 {
			out = ring(set, 0, out)
			break
		}
		slot := set.rr.Add(1) - 1
		out = ring(set, set.weights[slot%uint64(len(set.weights))], out)
	case AlgRelativeWeight:
		out = relativeWeight(set, out)
	case AlgCallLoad:
		out = sortedUsable(set, out, func(a, b *Destination) int { return cmp.Compare(a.calls.Load(), b.calls.Load()) })
	case AlgLatency:
		out = sortedUsable(set, out, func(a, b *Destination) int { return cmp.Compare(rttOrMax(a), rttOrMax(b)) })
	default: // AlgRoundRobin, and anything config validation let through
		out = ring(set, int((set.rr.Add(1)-1)%uint64(n)), out)
	}
	if len(out) > 0 {
		d.metrics.decision(out[0], alg)
	}
	return out
}

// ring lists usable destinations starting at index first and wrapping around: a hashed or
// round-robin choice that is down falls to its neighbour, as in Kamailio.
func ring(set *Set, first int, out []*Destination) []*Destination {
	n := len(set.Dests)
	for i := range n {
		if dst := set.Dests[(first+i)%n]; dst.usable() {
			out = append(out, dst)
		}
	}
	return out
}

// sortedUsable orders usable destinations by less, rotating the start among equals so ties
// (e.g. every backend idle) are shared rather than all landing on the first one.
func sortedUsable(set *Set, out []*Destination, less func(a, b *Destination) int) []*Destination {
	out = ring(set, int((set.rr.Add(1)-1)%uint64(len(set.Dests))), out)
	slices.SortStableFunc(out, less)
	return out
}

func rttOrMax(d *Destination) int64 {
	if v := d.rtt.Load(); v > 0 {
		return v
	}
	return 1<<63 - 1
}

// relativeWeight runs smooth weighted round-robin over the destinations usable now, so the
// weights are shares of whatever is up (Kamailio's algorithm 11).
func relativeWeight(set *Set, out []*Destination) []*Destination {
	set.swrrMu.Lock()
	total, best := 0, -1
	for i, d := range set.Dests {
		if !d.usable() {
			continue
		}
		set.swrrCur[i] += d.RWeight
		total += d.RWeight
		if best < 0 || set.swrrCur[i] > set.swrrCur[best] {
			best = i
		}
	}
	if best >= 0 {
		set.swrrCur[best] -= total
	}
	set.swrrMu.Unlock()
	if best < 0 {
		return out
	}
	return ring(set, best, out)
}

// hash is FNV-1a, inlined so the per-call path does not allocate.
func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	// FNV's low bits depend only on the low bits of each byte; the final mix (MurmurHash3's
	// fmix32) spreads every input bit, since the result is taken modulo small set sizes.
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
