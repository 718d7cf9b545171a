package dispatcher

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var benchAlgs = []Algorithm{AlgHashCallID, AlgRoundRobin, AlgWeight, AlgCallLoad}

func benchSpecs() []Spec {
	s := specs4(1)
	for i := range s {
		s[i].Weight = i + 1
		s[i].MaxLoad = 1000
	}
	return s
}

func benchKeys() []Key {
	keys := make([]Key, 64)
	for i := range keys {
		keys[i] = Key{CallID: fmt.Sprintf("%08x-%04x@10.1.2.3", uint32(i)*2654435761, i)}
	}
	return keys
}

func BenchmarkSelect(b *testing.B) {
	for _, metered := range []bool{false, true} {
		for _, alg := range benchAlgs {
			name := fmt.Sprintf("alg=%d/metrics=%v", alg, metered)
			b.Run(name, func(b *testing.B) {
				var m *Metrics
				if metered {
					m = NewMetrics(prometheus.NewRegistry())
				}
				d, err := New(benchSpecs(), discard, m)
				if err != nil {
					b.Fatal(err)
				}
				keys := benchKeys()
				buf := make([]*Destination, 0, 4)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					buf = d.Select(1, alg, &keys[i&63], buf)
					if len(buf) != 4 {
						b.Fatalf("got %d destinations", len(buf))
					}
					i++
				}
			})
		}
	}
}

// TestSelectAllocs pins the zero-allocation promise of the per-call path without metrics.
func TestSelectAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation changes allocation")
	}
	for _, alg := range allAlgs {
		t.Run(fmt.Sprint(int(alg)), func(t *testing.T) {
			d := newTest(t, benchSpecs())
			keys := benchKeys()
			buf := make([]*Destination, 0, 4)
			i := 0
			if n := testing.AllocsPerRun(200, func() {
				buf = d.Select(1, alg, &keys[i&63], buf)
				i++
			}); n != 0 {
				t.Errorf("%v allocs per Select, want 0", n)
			}
		})
	}
}
