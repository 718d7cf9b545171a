package registrar

import (
	"time"
)

// Update computes an AOR's new bindings from its current ones. The store calls it with its
// own clock reading and the AOR's unexpired bindings (a slice the update may reuse), and
// stores exactly what it returns; an error leaves the AOR unchanged.
//
// An update must be a pure function of its arguments and must not call the store: a store
// may run it under a lock, or more than once when it retries an optimistic transaction
// (the planned Redis store).
type Update func(now time.Time, current []Binding) ([]Binding, error)

// Store is the location service. All methods are safe for concurrent use.
type Store interface {
	// Now is the store's clock. The registrar computes remaining expiry against it, so that
	// one clock decides what has expired.
	Now() time.Time
	// Apply replaces the AOR's bindings with what update returns, atomically with respect
	// to every other call, and returns the AOR's resulting bindings in Lookup order.
	// Bindings the update returns already expired are not stored.
	Apply(aor string, update Update) ([]Binding, error)
	// Lookup returns the AOR's unexpired bindings, q descending, then most recently
	// registered first. It never returns an expired binding, swept or not.
	Lookup(aor string) []Binding
	// DropConn removes every binding that arrived over the given stream connection, for
	// when that connection closes, and reports how many it removed.
	DropConn(connID string) int
	// All returns every unexpired binding, ordered by AOR and then as Lookup orders them.
	All() []Binding
	// Count is the number of stored bindings. It may include bindings that expired since
	// the last sweep.
	Count() int
	// Remove deletes the AOR's binding whose Contact URI matches contact (compared as
	// RFC 3261 §19.1.4 compares URIs, angle brackets allowed) and reports whether it did.
	Remove(aor, contact string) bool
}
