package auth

import "sync"

// ncShards spreads the nc table over independent locks; the shard is picked from the
// nonce's random bytes, which only we generate, so load cannot be steered onto one shard.
const ncShards = 64

type ncResult uint8

const (
	ncOK ncResult = iota
	ncReplay
	ncEvicted
	ncExpired
)

type ncEntry struct {
	nc      uint32
	expires int64 // issue time + TTL, Unix nanoseconds
}

type ncShard struct {
	mu sync.Mutex
	m  map[nonceKey]ncEntry
	// order holds every key of m once, oldest insertion first, from head on.
	order []nonceKey
	head  int
	// floor is the latest issue time of an entry evicted before it expired. A nonce issued
	// at or before floor and absent from m may have been evicted, so its history is unknown.
	floor int64
	// horizon is the latest time prune has run at. A caller that read the clock before
	// another caller pruned may present a nonce whose entry is already gone; it must not
	// start a new history for it.
	horizon int64
	_       [40]byte // keep neighbouring shards' locks off one cache line
}

// ncStore remembers the highest nc accepted per nonce.
type ncStore struct {
	perShard int
	shards   [ncShards]ncShard
}

func newNCStore(max int) *ncStore {
	s := &ncStore{perShard: (max + ncShards - 1) / ncShards}
	for i := range s.shards {
		s.shards[i].m = make(map[nonceKey]ncEntry)
	}
	return s
}

// use records nc for the nonce k if it is higher than any accepted before.
func (s *ncStore) use(k nonceKey, issued, expires int64, nc uint32, now int64) ncResult {
	sh := &s.shards[k[issuedLen]%ncShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.prune(now)
	if e, ok := sh.m[k]; ok {
		if nc <= e.nc {
			return ncReplay
		}
		e.nc = nc
		sh.m[k] = e
		return ncOK
	}
	if expires <= sh.horizon {
		return ncExpired
	}
	if issued <= sh.floor {
		return ncEvicted
	}
	if len(sh.m) >= s.perShard {
		sh.evictOldest(now)
	}
	sh.m[k] = ncEntry{nc: nc, expires: expires}
	sh.order = append(sh.order, k)
	return ncOK
}

// prune drops expired entries from the front. Insertion order is not issue order, so an
// expired entry behind a live one waits for its turn; the cap still bounds memory.
func (sh *ncShard) prune(now int64) {
	sh.horizon = max(sh.horizon, now)
	for sh.head < len(sh.order) {
		if e := sh.m[sh.order[sh.head]]; e.expires > now {
			break
		}
		delete(sh.m, sh.order[sh.head])
		sh.head++
	}
	sh.compact()
}

func (sh *ncShard) evictOldest(now int64) {
	k := sh.order[sh.head]
	if e := sh.m[k]; e.expires > now {
		if issued := issuedOf(k); issued > sh.floor {
			sh.floor = issued
		}
	}
	delete(sh.m, k)
	sh.head++
	sh.compact()
}

func (sh *ncShard) compact() {
	if sh.head > 1024 && sh.head > len(sh.order)/2 {
		n := copy(sh.order, sh.order[sh.head:])
		clear(sh.order[n:])
		sh.order = sh.order[:n]
		sh.head = 0
	}
	if sh.head == len(sh.order) {
		sh.order, sh.head = sh.order[:0], 0
	}
}
