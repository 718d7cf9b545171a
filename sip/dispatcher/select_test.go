package dispatcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// hashAlgs maps each hashing algorithm to the Key field it must read.
var hashAlgs = []struct {
	alg   Algorithm
	name  string
	key   func(v string) *Key // v in the field the algorithm hashes; every other field fixed
	value func(i int) string  // realistic, distinct values for the hashed field
}{
	{AlgHashCallID, "0-callid", func(v string) *Key { return fixedKey(func(k *Key) { k.CallID = v }) },
		func(i int) string { return fmt.Sprintf("%08x-%04x@10.1.2.3", uint32(i)*2654435761, i) }},
	{AlgHashFrom, "1-from", func(v string) *Key { return fixedKey(func(k *Key) { k.FromURI = v }) },
		func(i int) string { return fmt.Sprintf("sip:%d@pbx.example.com", 1000+i) }},
	{AlgHashTo, "2-to", func(v string) *Key { return fixedKey(func(k *Key) { k.ToURI = v }) },
		func(i int) string { return fmt.Sprintf("sip:+4930%07d@carrier.example.net", 5550000+i) }},
	{AlgHashRURIUser, "3-ruri-user", func(v string) *Key { return fixedKey(func(k *Key) { k.RURIUser = v }) },
		func(i int) string { return fmt.Sprintf("%d", 2000+i) }},
	{AlgHashAuthUser, "5-auth-user", func(v string) *Key { return fixedKey(func(k *Key) { k.AuthUser = v }) },
		func(i int) string { return fmt.Sprintf("agent%03d", i) }},
}

func fixedKey(set func(*Key)) *Key {
	k := &Key{CallID: "fixed-call@host", FromURI: "sip:fixed@from", ToURI: "sip:fixed@to",
		RURIUser: "fixed", AuthUser: "fixed"}
	set(k)
	return k
}

func TestSelectHash(t *testing.T) {
	const keys = 1000
	for _, h := range hashAlgs {
		for _, n := range []int{2, 3, 4} {
			t.Run(fmt.Sprintf("%s/%d-dests", h.name, n), func(t *testing.T) {
				d := newTest(t, specs4(1)[:n])
				all := usableURIs(d, 1)
				var buf []*Destination
				first := map[string]string{} // key value -> first choice
				share := map[string]int{}
				for i := range keys {
					v := h.value(i)
					buf = d.Select(1, h.alg, h.key(v), buf)
					if !sameMembers(uris(buf), all) {
						t.Fatalf("key %q: failover list %v, want each of %v once", v, uris(buf), all)
					}
					first[v] = buf[0].URI
					share[buf[0].URI]++
				}
				if len(first) != keys {
					t.Fatalf("test generated only %d distinct keys", len(first))
				}
				// Same key, same first choice, however often and whatever else the key holds.
				for i := range keys {
					v := h.value(i)
					k := h.key(v)
					k2 := &Key{}
					switch h.alg { // change every field but the hashed one
					case AlgHashCallID:
						*k2 = Key{CallID: v, FromURI: "sip:x", ToURI: "sip:y", RURIUser: "z", AuthUser: "w"}
					case AlgHashFrom:
						*k2 = Key{FromURI: v, CallID: fmt.Sprint(i)}
					case AlgHashTo:
						*k2 = Key{ToURI: v, CallID: fmt.Sprint(i)}
					case AlgHashRURIUser:
						*k2 = Key{RURIUser: v, CallID: fmt.Sprint(i)}
					case AlgHashAuthUser:
						*k2 = Key{AuthUser: v, CallID: fmt.Sprint(i)}
					}
					for _, kk := range []*Key{k, k2} {
						if got := d.Select(1, h.alg, kk, buf)[0].URI; got != first[v] {
							t.Fatalf("key %q now goes to %s, first went to %s", v, got, first[v])
						}
					}
				}
				t.Logf("first-choice shares over %d keys: %v", keys, share)
				// Different keys spread: every destination gets a fair share, within 40%.
				fair := keys / n
				for _, u := range all {
					if share[u] < fair*6/10 || share[u] > fair*14/10 {
						t.Errorf("%s got %d of %d keys, fair share %d (all: %v)", u, share[u], keys, fair, share)
					}
				}

				// Only the keys of a destination that goes down move, and they move to its
				// neighbour; everybody else stays put (Kamailio's behaviour).
				down := all[1]
				next := all[2%n]
				if err := d.SetState(1, down, Inactive); err != nil {
					t.Fatal(err)
				}
				for i := range keys {
					v := h.value(i)
					got := d.Select(1, h.alg, h.key(v), buf)
					want := first[v]
					if want == down {
						want = next
					}
					if got[0].URI != want {
						t.Fatalf("with %s down, key %q went to %s, want %s", down, v, got[0].URI, want)
					}
					if slices.Contains(uris(got), down) {
						t.Fatalf("inactive %s offered: %v", down, uris(got))
					}
				}
			})
		}
	}
}

func TestSelectRoundRobin(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
		want  []string // first choices of consecutive selects
	}{
		{
			name:  "two alternate",
			specs: specs4(1)[:2],
			want:  strings.Fields("sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.1 sip:10.0.0.2"),
		},
		{
			name:  "four in turn",
			specs: specs4(1),
			want:  strings.Fields("sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.3 sip:10.0.0.4 sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.3 sip:10.0.0.4"),
		},
		{
			// A turn that lands on a down destination falls to its neighbour.
			name: "down one skipped",
			specs: []Spec{
				{SetID: 1, URI: "sip:10.0.0.1"},
				{SetID: 1, URI: "sip:10.0.0.2", Flags: flagDisabled},
				{SetID: 1, URI: "sip:10.0.0.3"},
			},
			want: strings.Fields("sip:10.0.0.1 sip:10.0.0.3 sip:10.0.0.3 sip:10.0.0.1 sip:10.0.0.3 sip:10.0.0.3"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTest(t, tt.specs)
			var buf []*Destination
			for i, w := range tt.want {
				buf = d.Select(1, AlgRoundRobin, &Key{CallID: "same"}, buf)
				if len(buf) == 0 || buf[0].URI != w {
					t.Fatalf("select %d: got %v, want %s first", i, uris(buf), w)
				}
				// The failover list continues around the ring from the first choice.
				all := usableURIs(d, 1)
				j := slices.Index(all, w)
				if want := append(slices.Clone(all[j:]), all[:j]...); !slices.Equal(uris(buf), want) {
					t.Fatalf("select %d: failover %v, want %v", i, uris(buf), want)
				}
			}
		})
	}
}

func TestSelectRandom(t *testing.T) {
	d := newTest(t, specs4(1))
	seen := map[string]int{}
	var buf []*Destination
	for range 400 {
		buf = d.Select(1, AlgRandom, &Key{}, buf)
		if !sameMembers(uris(buf), usableURIs(d, 1)) {
			t.Fatalf("failover list %v", uris(buf))
		}
		seen[buf[0].URI]++
	}
	// P(a given destination is never first in 400 fair picks) = 0.75^400 ≈ 1e-50.
	for _, u := range usableURIs(d, 1) {
		if seen[u] == 0 {
			t.Errorf("%s never chosen first in 400 random picks: %v", u, seen)
		}
	}
}

func TestSelectPriority(t *testing.T) {
	specs := []Spec{
		{SetID: 1, URI: "sip:10.0.0.1", Priority: 10},
		{SetID: 1, URI: "sip:10.0.0.2", Priority: 5},
		{SetID: 1, URI: "sip:10.0.0.3", Priority: 0},
		{SetID: 1, URI: "sip:10.0.0.4", Priority: 20},
	}
	tests := []struct {
		name string
		down []string
		want []string
	}{
		{"all up", nil, strings.Fields("sip:10.0.0.4 sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.3")},
		{"highest down", []string{"sip:10.0.0.4"}, strings.Fields("sip:10.0.0.1 sip:10.0.0.2 sip:10.0.0.3")},
		{"two down", []string{"sip:10.0.0.4", "sip:10.0.0.2"}, strings.Fields("sip:10.0.0.1 sip:10.0.0.3")},
		{"only lowest up", []string{"sip:10.0.0.4", "sip:10.0.0.1", "sip:10.0.0.2"}, []string{"sip:10.0.0.3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTest(t, specs)
			for _, u := range tt.down {
				if err := d.SetState(1, u, Inactive); err != nil {
					t.Fatal(err)
				}
			}
			var buf []*Destination
			for i := range 5 { // priority does not rotate
				buf = d.Select(1, AlgPriority, &Key{CallID: fmt.Sprint(i)}, buf)
				if !slices.Equal(uris(buf), tt.want) {
					t.Fatalf("select %d: %v, want %v", i, uris(buf), tt.want)
				}
			}
		})
	}
}

func TestSelectWeight(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		picks   int
		want    []int // first-choice count per destination, in list order
	}{
		{"3:1 one cycle", []int{3, 1}, 4, []int{3, 1}},
		{"3:1 over 400", []int{3, 1}, 400, []int{300, 100}},
		{"kamailio percentages", []int{50, 30, 20}, 100, []int{50, 30, 20}},
		{"5:3:2 twice", []int{5, 3, 2}, 20, []int{10, 6, 4}},
		{"unset weights are equal", []int{0, 0, 0}, 30, []int{10, 10, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var specs []Spec
			for i, w := range tt.weights {
				specs = append(specs, Spec{SetID: 1, URI: fmt.Sprintf("sip:10.0.0.%d", i+1), Weight: w})
			}
			d := newTest(t, specs)
			got := make([]int, len(specs))
			var buf []*Destination
			for range tt.picks {
				buf = d.Select(1, AlgWeight, &Key{}, buf)
				if len(buf) != len(specs) {
					t.Fatalf("failover list %v misses destinations", uris(buf))
				}
				got[slices.Index(uris(d.Sets()[0].Dests), buf[0].URI)]++
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("first choices %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("equal weights interleave, not bunch", func(t *testing.T) {
		// A plain expansion of 5:5 would send five calls in a row to a, then five to b.
		d := newTest(t, []Spec{{SetID: 1, URI: "sip:a", Weight: 5}, {SetID: 1, URI: "sip:b", Weight: 5}})
		var seq string
		var buf []*Destination
		for range 20 {
			buf = d.Select(1, AlgWeight, &Key{}, buf)
			seq += strings.TrimPrefix(buf[0].URI, "sip:")
		}
		if seq != strings.Repeat("ab", 10) {
			t.Errorf("sequence %s, want strict alternation", seq)
		}
	})
}

func TestSelectCallLoad(t *testing.T) {
	d := newTest(t, []Spec{
		{SetID: 1, URI: "sip:10.0.0.1", MaxLoad: 2},
		{SetID: 1, URI: "sip:10.0.0.2", MaxLoad: 2},
		{SetID: 1, URI: "sip:10.0.0.3", MaxLoad: 2},
	})
	a, b, c := mustFind(t, d, 1, "sip:10.0.0.1"), mustFind(t, d, 1, "sip:10.0.0.2"), mustFind(t, d, 1, "sip:10.0.0.3")
	steps := []struct {
		name  string
		do    func()
		first string   // "" : any of the tied
		want  []string // members of the list, in order when first is set and no ties
	}{
		{"idle", func() {}, "", []string{"sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"}},
		{"a busy", func() { a.CallStarted() }, "", []string{"sip:10.0.0.2", "sip:10.0.0.3", "sip:10.0.0.1"}},
		{"a full, b busy", func() { a.CallStarted(); b.CallStarted() }, "sip:10.0.0.3", []string{"sip:10.0.0.3", "sip:10.0.0.2"}},
		{"c busiest", func() { c.CallStarted(); c.CallStarted(); b.CallEnded() }, "", []string{"sip:10.0.0.2"}},
		{"a frees a slot", func() { a.CallEnded() }, "sip:10.0.0.2", []string{"sip:10.0.0.2", "sip:10.0.0.1"}},
		{"all full", func() { a.CallStarted(); b.CallStarted(); b.CallStarted() }, "", nil},
		{"calls end", func() { a.CallEnded(); a.CallEnded(); b.CallEnded(); c.CallEnded() }, "sip:10.0.0.1", []string{"sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"}},
	}
	var buf []*Destination
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			for range 3 {
				buf = d.Select(1, AlgCallLoad, &Key{}, buf)
				got := uris(buf)
				if s.first != "" && (len(got) == 0 || got[0] != s.first) {
					t.Fatalf("calls %d/%d/%d: got %v, want %s first", a.ActiveCalls(), b.ActiveCalls(), c.ActiveCalls(), got, s.first)
				}
				if !sameMembers(got, s.want) {
					t.Fatalf("calls %d/%d/%d: got %v, want members %v", a.ActiveCalls(), b.ActiveCalls(), c.ActiveCalls(), got, s.want)
				}
				for i := 1; i < len(buf); i++ {
					if buf[i-1].ActiveCalls() > buf[i].ActiveCalls() {
						t.Fatalf("not ordered by load: %v", got)
					}
				}
			}
		})
	}

	t.Run("ties are shared and load balances", func(t *testing.T) {
		d := newTest(t, specs4(2))
		var buf []*Destination
		firsts := map[string]int{}
		for range 4 {
			buf = d.Select(2, AlgCallLoad, &Key{}, buf)
			firsts[buf[0].URI]++
		}
		if len(firsts) != 4 {
			t.Errorf("idle destinations not shared: %v", firsts)
		}
		// Each new call goes to the least loaded: 12 calls end up 3 each.
		for range 12 {
			buf = d.Select(2, AlgCallLoad, &Key{}, buf)
			buf[0].CallStarted()
		}
		for _, s := range d.Sets() {
			for _, dst := range s.Dests {
				if dst.ActiveCalls() != 3 {
					t.Errorf("%s has %d calls, want 3", dst.URI, dst.ActiveCalls())
				}
			}
		}
	})
}

func TestSelectRelativeWeight(t *testing.T) {
	specs := []Spec{
		{SetID: 1, URI: "sip:a", Weight: 1, RWeight: 2},
		{SetID: 1, URI: "sip:b", Weight: 1, RWeight: 3},
		{SetID: 1, URI: "sip:c", Weight: 1, RWeight: 1},
	}
	tests := []struct {
		name  string
		down  []string
		picks int
		want  map[string]int
	}{
		{"all up 2:3:1", nil, 600, map[string]int{"sip:a": 200, "sip:b": 300, "sip:c": 100}},
		{"a down, b:c holds 3:1", []string{"sip:a"}, 400, map[string]int{"sip:b": 300, "sip:c": 100}},
		{"b down, a:c holds 2:1", []string{"sip:b"}, 300, map[string]int{"sip:a": 200, "sip:c": 100}},
		{"only c", []string{"sip:a", "sip:b"}, 50, map[string]int{"sip:c": 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTest(t, specs)
			var buf []*Destination
			for range 7 { // run with everyone up first, so scores are mid-cycle when one goes down
				buf = d.Select(1, AlgRelativeWeight, &Key{}, buf)
			}
			for _, u := range tt.down {
				if err := d.SetState(1, u, Disabled); err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]int{}
			for range tt.picks {
				buf = d.Select(1, AlgRelativeWeight, &Key{}, buf)
				if !sameMembers(uris(buf), usableURIs(d, 1)) {
					t.Fatalf("failover list %v", uris(buf))
				}
				got[buf[0].URI]++
			}
			if len(got) != len(tt.want) {
				t.Fatalf("first choices %v, want %v", got, tt.want)
			}
			for u, w := range tt.want {
				// Smooth weighted round-robin is exact per cycle; scores left over from before
				// the change may shift a couple of picks.
				if g := got[u]; g < w-2 || g > w+2 {
					t.Errorf("%s chosen %d times, want %d±2 (all: %v)", u, g, w, got)
				}
			}
		})
	}
}

func TestSelectLatency(t *testing.T) {
	cfg := ProbeConfig{Threshold: 3, Recover: 1, ReplyCodes: []string{"2xx"}}
	d := newTest(t, specs4(1))
	a, b, c, never := mustFind(t, d, 1, "sip:10.0.0.1"), mustFind(t, d, 1, "sip:10.0.0.2"),
		mustFind(t, d, 1, "sip:10.0.0.3"), mustFind(t, d, 1, "sip:10.0.0.4")
	steps := []struct {
		name string
		do   func()
		rttB time.Duration
	}{
		{"first samples", func() {
			d.probeResult(cfg, a, 200, nil, 30*time.Millisecond)
			d.probeResult(cfg, b, 200, nil, 10*time.Millisecond)
			d.probeResult(cfg, c, 200, nil, 20*time.Millisecond)
		}, 10 * time.Millisecond},
		// Failed probes say nothing about latency.
		{"failure keeps rtt", func() { d.probeResult(cfg, b, 503, nil, 5*time.Second) }, 10 * time.Millisecond},
		// One slow answer moves b by 30%: 10ms*0.7 + 100ms*0.3 = 37ms.
		{"smoothed", func() { d.probeResult(cfg, b, 200, nil, 100*time.Millisecond) }, 37 * time.Millisecond},
	}
	wantOrders := [][]string{
		{b.URI, c.URI, a.URI, never.URI},
		{b.URI, c.URI, a.URI, never.URI},
		{c.URI, a.URI, b.URI, never.URI},
	}
	var buf []*Destination
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			if got := b.RTT(); got != s.rttB {
				t.Errorf("b.RTT() = %v, want %v", got, s.rttB)
			}
			for range 4 { // latency ordering does not rotate while RTTs differ
				buf = d.Select(1, AlgLatency, &Key{}, buf)
				if !slices.Equal(uris(buf), wantOrders[i]) {
					t.Fatalf("order %v, want %v", uris(buf), wantOrders[i])
				}
			}
		})
	}
	t.Run("fastest down", func(t *testing.T) {
		if err := d.SetState(1, c.URI, Draining); err != nil {
			t.Fatal(err)
		}
		buf = d.Select(1, AlgLatency, &Key{}, buf)
		if want := []string{a.URI, b.URI, never.URI}; !slices.Equal(uris(buf), want) {
			t.Fatalf("order %v, want %v", uris(buf), want)
		}
	})
}

var allAlgs = []Algorithm{AlgHashCallID, AlgHashFrom, AlgHashTo, AlgHashRURIUser, AlgRoundRobin,
	AlgHashAuthUser, AlgRandom, AlgPriority, AlgWeight, AlgCallLoad, AlgRelativeWeight, AlgLatency}

// TestSelectOnlyUsable checks, for every algorithm, the promises all of them share.
func TestSelectOnlyUsable(t *testing.T) {
	specs := []Spec{
		{SetID: 1, URI: "sip:10.0.0.1", Priority: 9, Weight: 5},
		{SetID: 1, URI: "sip:10.0.0.2", Flags: flagInactive, Priority: 8, Weight: 5},
		{SetID: 1, URI: "sip:10.0.0.3", State: "draining", Priority: 7, Weight: 5},
		{SetID: 1, URI: "sip:10.0.0.4", Flags: flagDisabled, Priority: 6, Weight: 5},
		{SetID: 1, URI: "sip:10.0.0.5", MaxLoad: 1, Priority: 5, Weight: 5},
		{SetID: 1, URI: "sip:10.0.0.6", Priority: 4, Weight: 1},
		{SetID: 1, URI: "sip:10.0.0.7", Priority: 3, Weight: 2},
		{SetID: 2, URI: "sip:10.0.1.1", Flags: flagInactive},
		{SetID: 2, URI: "sip:10.0.1.2", Flags: flagDisabled},
		{SetID: 2, URI: "sip:10.0.1.3", State: "draining"},
		{SetID: 2, URI: "sip:10.0.1.4", MaxLoad: 1},
	}
	if !AlgLatency.Valid() || Algorithm(7).Valid() || Algorithm(12).Valid() || Algorithm(-1).Valid() {
		t.Error("Algorithm.Valid disagrees with the implemented numbers")
	}
	for _, alg := range allAlgs {
		t.Run(fmt.Sprint(int(alg)), func(t *testing.T) {
			if !alg.Valid() {
				t.Errorf("algorithm %d not Valid", alg)
			}
			d := newTest(t, specs)
			mustFind(t, d, 1, "sip:10.0.0.5").CallStarted() // at maxload
			mustFind(t, d, 2, "sip:10.0.1.4").CallStarted()
			d.probeResult(ProbeConfig{Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}},
				mustFind(t, d, 1, "sip:10.0.0.6"), 200, nil, time.Millisecond)
			want := []string{"sip:10.0.0.1", "sip:10.0.0.6", "sip:10.0.0.7"}
			firsts := map[string]bool{}
			buf := make([]*Destination, 0, 8)
			for i := range 300 {
				k := &Key{CallID: fmt.Sprintf("c%d", i), FromURI: fmt.Sprintf("sip:%d@x", i),
					ToURI: fmt.Sprintf("sip:%d@y", i), RURIUser: fmt.Sprint(i), AuthUser: fmt.Sprintf("u%d", i)}
				out := d.Select(1, alg, k, buf)
				if !sameMembers(uris(out), want) {
					t.Fatalf("pick %d: %v, want each of %v exactly once", i, uris(out), want)
				}
				if &out[0] != &buf[:1][0] {
					t.Fatalf("pick %d: result does not reuse the caller's buffer", i)
				}
				firsts[out[0].URI] = true
				if got := d.Select(2, alg, k, out); len(got) != 0 {
					t.Fatalf("all-down set offered %v", uris(got))
				}
				if got := d.Select(99, alg, k, out); len(got) != 0 {
					t.Fatalf("unknown set offered %v", uris(got))
				}
			}
			if alg == AlgPriority && (len(firsts) != 1 || !firsts["sip:10.0.0.1"]) {
				t.Errorf("priority first choices %v, want only the highest", firsts)
			}
			if alg == AlgLatency && (len(firsts) != 1 || !firsts["sip:10.0.0.6"]) {
				t.Errorf("latency first choices %v, want only the one with an RTT", firsts)
			}
			if alg != AlgPriority && alg != AlgLatency && len(firsts) != len(want) {
				t.Errorf("first choices %v: want every usable destination to be first sometimes", firsts)
			}
		})
	}
	t.Run("empty dispatcher", func(t *testing.T) {
		d := newTest(t, nil)
		for _, alg := range allAlgs {
			if got := d.Select(1, alg, &Key{}, nil); len(got) != 0 {
				t.Errorf("alg %d: %v", alg, uris(got))
			}
		}
	})
}
