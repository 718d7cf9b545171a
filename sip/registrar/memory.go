package registrar

import (
	"cmp"
	"container/heap"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// MemoryStore is the in-process location service.
//
// Each AOR sits in one min-heap entry keyed by its earliest expiry, so a sweep touches only
// AORs that have something to expire and costs nothing when nothing has. Reads filter by
// time as well, so a binding is never returned past its expiry even between sweeps.
// Record slices are replaced, never edited in place, which lets readers decode them after
// releasing the lock.
type MemoryStore struct {
	clock    func() time.Time
	onExpire func([]Binding)

	mu    sync.RWMutex
	aors  map[string]*aorState
	conns map[string][]*aorState // stream connection -> AORs with a binding over it
	heap  expiryHeap
	n     int
}

type aorState struct {
	aor  string
	recs []record
	next int64 // earliest expiry in recs
	idx  int   // position in the heap, -1 when not in it
}

// MemoryOption configures a MemoryStore.
type MemoryOption func(*MemoryStore)

// WithExpiryHook has fn called, outside the store's lock, with the bindings each sweep (or
// an Apply finding stale bindings of its AOR) removes because they expired, so the router
// can log and count them.
func WithExpiryHook(fn func(expired []Binding)) MemoryOption {
	return func(s *MemoryStore) { s.onExpire = fn }
}

// NewMemoryStore returns an empty store reading time from clock (time.Now when nil).
// Call Run to have expired bindings removed on time.
func NewMemoryStore(clock func() time.Time, opts ...MemoryOption) *MemoryStore {
	if clock == nil {
		clock = time.Now
	}
	s := &MemoryStore{
		clock: clock,
		aors:  make(map[string]*aorState),
		conns: make(map[string][]*aorState),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Now implements Store.
func (s *MemoryStore) Now() time.Time { return s.clock() }

// Run sweeps expired bindings every interval (1s when not positive) until ctx ends.
func (s *MemoryStore) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep removes every binding expired by now, reports them to the expiry hook, and returns
// how many it removed.
func (s *MemoryStore) Sweep() int {
	now := s.clock().UnixNano()
	var dead []Binding
	removed := 0
	s.mu.Lock()
	for len(s.heap) > 0 && s.heap[0].next <= now {
		st := s.heap[0]
		live := make([]record, 0, len(st.recs))
		for i := range st.recs {
			if st.recs[i].expires > now {
				live = append(live, st.recs[i])
				continue
			}
			removed++
			if s.onExpire != nil {
				dead = appendDecoded(dead, &st.recs[i], st.aor)
			}
		}
		s.replace(st, live)
	}
	s.mu.Unlock()
	s.reportExpired(dead)
	return removed
}

// Apply implements Store.
func (s *MemoryStore) Apply(aor string, update Update) ([]Binding, error) {
	now := s.clock()
	nowN := now.UnixNano()
	s.mu.Lock()
	st := s.aors[aor]
	var current, expired []Binding
	var live []record
	stale := false
	if st != nil {
		current = make([]Binding, 0, len(st.recs))
		for i := range st.recs {
			switch {
			case st.recs[i].expires > nowN:
				current = appendDecoded(current, &st.recs[i], st.aor)
				live = append(live, st.recs[i])
			case s.onExpire != nil:
				expired = appendDecoded(expired, &st.recs[i], st.aor)
				fallthrough
			default:
				stale = true
			}
		}
	}
	next, err := update(now, current)
	var recs []record
	if err == nil {
		next, recs, err = encodeAll(aor, next, nowN)
	}
	if err != nil {
		if stale {
			s.replace(st, live)
		}
		s.mu.Unlock()
		s.reportExpired(expired)
		return nil, err
	}
	if st == nil && len(recs) > 0 {
		st = &aorState{aor: strings.Clone(aor), idx: -1}
		s.aors[st.aor] = st
	}
	if st != nil {
		s.replace(st, recs)
	}
	s.mu.Unlock()
	s.reportExpired(expired)
	return next, nil
}

// encodeAll drops expired bindings, puts the rest in Lookup order and encodes them.
func encodeAll(aor string, next []Binding, now int64) ([]Binding, []record, error) {
	n := 0 // compacted in place, by index: a range copy of each Binding would sit on the stack
	for i := range next {
		if next[i].Expires.UnixNano() <= now {
			continue
		}
		if n != i {
			next[n] = next[i]
		}
		next[n].AOR = aor
		n++
	}
	kept := next[:n]
	sortBindings(kept)
	recs := make([]record, len(kept))
	for i := range kept {
		r, err := encode(&kept[i])
		if err != nil {
			return nil, nil, err
		}
		recs[i] = r
	}
	return kept, recs, nil
}

func (s *MemoryStore) reportExpired(bs []Binding) {
	if s.onExpire != nil && len(bs) > 0 {
		s.onExpire(bs)
	}
}

// replace installs recs as the AOR's records and keeps the count, the connection index
// and the heap in step. It must be called with the lock held.
func (s *MemoryStore) replace(st *aorState, recs []record) {
	old := st.recs
	s.n += len(recs) - len(old)
	for i := range old {
		if c := old[i].connID(); c != "" && !hasConn(recs, c) && firstConn(old, i) {
			s.unlinkConn(c, st)
		}
	}
	for i := range recs {
		if c := recs[i].connID(); c != "" && !hasConn(old, c) && firstConn(recs, i) {
			s.conns[c] = append(s.conns[c], st)
		}
	}
	st.recs = recs
	if len(recs) == 0 {
		if st.idx >= 0 {
			heap.Remove(&s.heap, st.idx)
		}
		delete(s.aors, st.aor)
		return
	}
	st.next = recs[0].expires
	for i := range recs[1:] {
		st.next = min(st.next, recs[i+1].expires)
	}
	if st.idx >= 0 {
		heap.Fix(&s.heap, st.idx)
	} else {
		heap.Push(&s.heap, st)
	}
}

func hasConn(recs []record, c string) bool {
	for i := range recs {
		if recs[i].connID() == c {
			return true
		}
	}
	return false
}

// firstConn reports whether recs[i] is the first record over its connection, so an AOR
// with two bindings over one connection is indexed once.
func firstConn(recs []record, i int) bool {
	return !hasConn(recs[:i], recs[i].connID())
}

func (s *MemoryStore) unlinkConn(c string, st *aorState) {
	list := s.conns[c]
	if i := slices.Index(list, st); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(s.conns, c)
	} else {
		s.conns[c] = list
	}
}

// Lookup implements Store.
func (s *MemoryStore) Lookup(aor string) []Binding {
	now := s.clock().UnixNano()
	s.mu.RLock()
	st := s.aors[aor]
	var recs []record
	var key string
	if st != nil {
		recs, key = st.recs, st.aor
	}
	s.mu.RUnlock()
	return decodeLive(nil, key, recs, now)
}

func decodeLive(out []Binding, aor string, recs []record, now int64) []Binding {
	for i := range recs {
		if recs[i].expires > now {
			out = appendDecoded(out, &recs[i], aor)
		}
	}
	return out
}

// DropConn implements Store.
func (s *MemoryStore) DropConn(connID string) int {
	if connID == "" {
		return 0
	}
	removed := 0
	s.mu.Lock()
	for _, st := range slices.Clone(s.conns[connID]) {
		keep := make([]record, 0, len(st.recs))
		for i := range st.recs {
			if st.recs[i].connID() != connID {
				keep = append(keep, st.recs[i])
			}
		}
		removed += len(st.recs) - len(keep)
		s.replace(st, keep)
	}
	s.mu.Unlock()
	return removed
}

// All implements Store.
func (s *MemoryStore) All() []Binding {
	now := s.clock().UnixNano()
	type snap struct {
		aor  string
		recs []record
	}
	s.mu.RLock()
	snaps := make([]snap, 0, len(s.aors))
	for _, st := range s.aors {
		snaps = append(snaps, snap{st.aor, st.recs})
	}
	n := s.n
	s.mu.RUnlock()
	slices.SortFunc(snaps, func(a, b snap) int { return cmp.Compare(a.aor, b.aor) })
	out := make([]Binding, 0, n)
	for _, sn := range snaps {
		out = decodeLive(out, sn.aor, sn.recs, now)
	}
	return out
}

// Count implements Store.
func (s *MemoryStore) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.n
}

// Remove implements Store.
func (s *MemoryStore) Remove(aor, contact string) bool {
	contact = strings.TrimSpace(contact)
	if strings.HasPrefix(contact, "<") && strings.HasSuffix(contact, ">") {
		contact = contact[1 : len(contact)-1]
	}
	var want gosip.Uri
	parsed := gosip.ParseUri(contact, &want) == nil
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.aors[aor]
	if st == nil {
		return false
	}
	for i := range st.recs {
		match := st.recs[i].contact() == contact
		if !match && parsed {
			var have gosip.Uri
			match = gosip.ParseUri(st.recs[i].contact(), &have) == nil && sameContact(&have, &want)
		}
		if match {
			s.replace(st, slices.Concat(st.recs[:i], st.recs[i+1:]))
			return true
		}
	}
	return false
}

// expiryHeap orders AORs by their earliest binding expiry.
type expiryHeap []*aorState

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].next < h[j].next }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *expiryHeap) Push(x any) {
	st := x.(*aorState)
	st.idx = len(*h)
	*h = append(*h, st)
}
func (h *expiryHeap) Pop() any {
	old := *h
	st := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	st.idx = -1
	return st
}
