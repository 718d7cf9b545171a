package dispatcher

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var reloadBase = []Spec{
	{SetID: 1, URI: "sip:10.0.0.1", Weight: 1, MaxLoad: 10}, // stays, carries calls and RTT
	{SetID: 1, URI: "sip:10.0.0.2"},                         // stays, probed inactive
	{SetID: 1, URI: "sip:10.0.0.3"},                         // removed
	{SetID: 2, URI: "sip:10.0.1.1"},                         // whole set removed
}

var reloadNext = []Spec{
	{SetID: 1, URI: "sip:10.0.0.1", Weight: 3, MaxLoad: 10},
	{SetID: 1, URI: "sip:10.0.0.2"},
	{SetID: 1, URI: "sip:10.0.0.4"}, // new
	{SetID: 3, URI: "sip:10.0.2.1"}, // new set
}

func TestReloadRejectsBadListWhole(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
		want  []string
	}{
		{"bad uri", append(slices.Clone(reloadNext), Spec{SetID: 1, URI: "http://10.0.0.9"}), []string{`"http://10.0.0.9"`}},
		{"duplicate", append(slices.Clone(reloadNext), Spec{SetID: 3, URI: "sip:10.0.2.1"}), []string{"sip:10.0.2.1 appears twice in set 3"}},
		{"two problems", append(slices.Clone(reloadNext), Spec{SetID: 1, URI: "sip:x:0"}, Spec{SetID: 1, URI: "sip:y", Weight: -1}),
			[]string{`"sip:x:0"`, "sip:y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTest(t, reloadBase)
			before := d.Sets()
			beforeDests := map[int][]*Destination{}
			for _, s := range before {
				beforeDests[s.ID] = slices.Clone(s.Dests)
			}
			err := d.Reload(tt.specs)
			if err == nil {
				t.Fatal("Reload accepted a bad list")
			}
			for _, w := range append([]string{"reload rejected"}, tt.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			after := d.Sets()
			if len(after) != len(before) {
				t.Fatalf("sets changed: %d -> %d", len(before), len(after))
			}
			for i, s := range after {
				if s != before[i] || !slices.Equal(s.Dests, beforeDests[s.ID]) {
					t.Errorf("set %d was modified by a rejected reload", s.ID)
				}
			}
			if d.Find(1, "sip:10.0.0.4") != nil || d.Find(1, "sip:10.0.0.3") == nil {
				t.Error("a rejected reload applied part of the new list")
			}
		})
	}
}

func TestReloadCarriesLiveState(t *testing.T) {
	cfg := ProbeConfig{Threshold: 2, Recover: 2, ReplyCodes: []string{"2xx"}}
	d := newTest(t, reloadBase)
	one, two := mustFind(t, d, 1, "sip:10.0.0.1"), mustFind(t, d, 1, "sip:10.0.0.2")
	one.CallStarted()
	one.CallStarted()
	one.CallStarted()
	d.probeResult(cfg, one, 200, nil, 40*time.Millisecond)
	d.probeResult(cfg, one, 503, nil, 0) // one failure of two: still active
	feed(d, cfg, two, 'F')
	feed(d, cfg, two, 'F')
	feed(d, cfg, two, 'S') // one good probe of the two needed
	if two.State() != Inactive || one.State() != Active {
		t.Fatalf("setup: states %v %v", one.State(), two.State())
	}

	if err := d.Reload(reloadNext); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	one2, two2 := mustFind(t, d, 1, "sip:10.0.0.1"), mustFind(t, d, 1, "sip:10.0.0.2")

	t.Run("stayer keeps calls, rtt and verdict", func(t *testing.T) {
		if one2.ActiveCalls() != 3 {
			t.Errorf("calls %d, want 3", one2.ActiveCalls())
		}
		if one2.RTT() != 40*time.Millisecond {
			t.Errorf("RTT %v, want 40ms", one2.RTT())
		}
		if two2.State() != Inactive {
			t.Errorf("probed-inactive destination came back %v", two2.State())
		}
		if _, reason := two2.ProbeStatus(); reason != "probe answered 200" {
			t.Errorf("last probe reason lost: %q", reason)
		}
	})
	t.Run("stayer takes the new configuration", func(t *testing.T) {
		if one2.Weight != 3 {
			t.Errorf("weight %d, want 3", one2.Weight)
		}
	})
	t.Run("probe counts continue", func(t *testing.T) {
		feed(d, cfg, one2, 'N') // second consecutive failure
		if one2.State() != Inactive {
			t.Errorf("failure count reset by reload: %v after 2 consecutive failures", one2.State())
		}
		feed(d, cfg, two2, 'S') // second consecutive success
		if two2.State() != Active {
			t.Errorf("success count reset by reload: %v after 2 consecutive successes", two2.State())
		}
	})
	t.Run("calls placed before the reload end on the old object", func(t *testing.T) {
		// The dialog tracker holds the *Destination Select gave it; the BYE of a call placed
		// before the reload is counted off that pointer.
		one.CallEnded()
		one.CallEnded()
		if one2.ActiveCalls() != 1 {
			t.Errorf("after two of three old calls ended, the live destination counts %d calls, want 1", one2.ActiveCalls())
		}
		one2.CallStarted()
		one.CallEnded()
		one2.CallEnded()
		if one2.ActiveCalls() != 0 {
			t.Errorf("all calls ended but %d counted", one2.ActiveCalls())
		}
	})
	t.Run("new appears, removed disappear", func(t *testing.T) {
		if d.Find(1, "sip:10.0.0.4") == nil || d.Find(3, "sip:10.0.2.1") == nil {
			t.Error("new destinations missing")
		}
		if d.Find(1, "sip:10.0.0.3") != nil || d.Find(2, "sip:10.0.1.1") != nil {
			t.Error("removed destinations still present")
		}
		if got := d.Select(2, AlgRoundRobin, &Key{}, nil); len(got) != 0 {
			t.Errorf("removed set 2 offered %v", uris(got))
		}
		var ids []int
		for _, s := range d.Sets() {
			ids = append(ids, s.ID)
		}
		if !slices.Equal(ids, []int{1, 3}) {
			t.Errorf("sets %v, want [1 3]", ids)
		}
		seen := map[string]bool{}
		for range 8 {
			for _, dst := range d.Select(1, AlgRoundRobin, &Key{}, nil) {
				seen[dst.URI] = true
			}
		}
		if seen["sip:10.0.0.3"] || !seen["sip:10.0.0.4"] {
			t.Errorf("offered after reload: %v", seen)
		}
	})
}

func TestSetState(t *testing.T) {
	tests := []struct {
		name string
		set  int
		uri  string
		st   State
		ok   bool
	}{
		{"drain", 1, "sip:10.0.0.1", Draining, true},
		{"disable", 1, "sip:10.0.0.2", Disabled, true},
		{"missing uri", 1, "sip:10.0.0.9", Disabled, false},
		{"missing set", 7, "sip:10.0.0.1", Disabled, false},
		{"uri from another set", 2, "sip:10.0.0.1", Draining, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTest(t, append(specs4(1), Spec{SetID: 2, URI: "sip:10.0.9.9"}))
			err := d.SetState(tt.set, tt.uri, tt.st)
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), tt.uri) || !strings.Contains(err.Error(), fmt.Sprint(tt.set)) {
					t.Errorf("SetState(%d, %s) = %v, want an error naming both", tt.set, tt.uri, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := mustFind(t, d, tt.set, tt.uri).State(); got != tt.st {
				t.Errorf("state %v, want %v", got, tt.st)
			}
			for range 8 {
				if got := d.Select(tt.set, AlgRoundRobin, &Key{}, nil); slices.Contains(uris(got), tt.uri) {
					t.Fatalf("%v destination offered: %v", tt.st, uris(got))
				}
			}
			if err := d.SetState(tt.set, tt.uri, Active); err != nil || mustFind(t, d, tt.set, tt.uri).State() != Active {
				t.Errorf("re-enable: %v", err)
			}
		})
	}
}

// TestReloadConcurrent is for the race detector: selects, call accounting, probes and admin
// changes while the table is replaced.
func TestReloadConcurrent(t *testing.T) {
	d := newTest(t, reloadBase)
	cfg := ProbeConfig{Threshold: 2, Recover: 1, ReplyCodes: []string{"2xx"}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			buf := make([]*Destination, 0, 8)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				buf = d.Select(1, allAlgs[(i+w)%len(allAlgs)], &Key{CallID: fmt.Sprint(i)}, buf)
				if len(buf) > 0 {
					buf[0].CallStarted()
					d.probeResult(cfg, buf[0], 200, nil, time.Millisecond)
					buf[0].CallEnded()
				}
				_ = d.SetState(1, "sip:10.0.0.4", Draining)
				_ = d.SetState(1, "sip:10.0.0.4", Active)
			}
		})
	}
	for i := range 50 {
		specs := reloadBase
		if i%2 == 1 {
			specs = reloadNext
		}
		if err := d.Reload(specs); err != nil {
			t.Fatal(err)
		}
		if err := d.Reload([]Spec{{SetID: 1, URI: "bad"}}); err == nil {
			t.Fatal("bad reload accepted")
		}
	}
	close(stop)
	wg.Wait()
	for _, s := range d.Sets() {
		for _, dst := range s.Dests {
			if dst.ActiveCalls() != 0 {
				t.Errorf("%s counts %d calls after every call ended", dst.URI, dst.ActiveCalls())
			}
		}
	}
}

func TestIsDestinationFollowsReload(t *testing.T) {
	d := newTest(t, []Spec{{SetID: 1, URI: "sip:10.0.0.1:5060"}})
	if !d.IsDestination(netip.MustParseAddr("10.0.0.1")) || !d.IsDestination(netip.MustParseAddr("::ffff:10.0.0.1")) {
		t.Fatal("a destination's address (plain and IPv4-mapped) must be recognised")
	}
	if d.IsDestination(netip.MustParseAddr("10.0.0.2")) {
		t.Fatal("an address that is no destination was recognised")
	}
	if err := d.Reload([]Spec{{SetID: 1, URI: "sip:10.0.0.2:5060"}}); err != nil {
		t.Fatal(err)
	}
	if d.IsDestination(netip.MustParseAddr("10.0.0.1")) || !d.IsDestination(netip.MustParseAddr("10.0.0.2")) {
		t.Fatal("the address index did not follow the reload")
	}
}
