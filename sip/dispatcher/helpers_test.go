package dispatcher

import (
	"log/slog"
	"slices"
	"testing"
)

var discard = slog.New(slog.DiscardHandler)

// newTest builds a dispatcher without metrics and fails the test on a build error.
func newTest(t testing.TB, specs []Spec) *Dispatcher {
	t.Helper()
	d, err := New(specs, discard, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// mustFind returns the live destination or fails the test.
func mustFind(t testing.TB, d *Dispatcher, set int, uri string) *Destination {
	t.Helper()
	dst := d.Find(set, uri)
	if dst == nil {
		t.Fatalf("set %d has no destination %s", set, uri)
	}
	return dst
}

func uris(ds []*Destination) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.URI
	}
	return out
}

// usableURIs lists, in set order, the destinations of a set that may take a call now.
func usableURIs(d *Dispatcher, set int) []string {
	var out []string
	for _, s := range d.Sets() {
		if s.ID != set {
			continue
		}
		for _, dst := range s.Dests {
			if dst.usable() {
				out = append(out, dst.URI)
			}
		}
	}
	return out
}

// sameMembers reports whether a and b hold the same strings, each exactly once.
func sameMembers(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b) && len(slices.Compact(a)) == len(b)
}

// specs4 is a set of four equal active destinations.
func specs4(set int) []Spec {
	return []Spec{
		{SetID: set, URI: "sip:10.0.0.1"},
		{SetID: set, URI: "sip:10.0.0.2"},
		{SetID: set, URI: "sip:10.0.0.3"},
		{SetID: set, URI: "sip:10.0.0.4"},
	}
}
