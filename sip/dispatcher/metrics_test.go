package dispatcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

const stateFamily = "gateway_dispatcher_destination_state"

// stateExposition is the expected text of the state family: one destination per entry.
func stateExposition(dests ...dstState) string {
	var b strings.Builder
	b.WriteString("# HELP gateway_dispatcher_destination_state 1 for the current state of each destination (active, inactive, draining, disabled).\n")
	b.WriteString("# TYPE gateway_dispatcher_destination_state gauge\n")
	for _, d := range dests {
		for _, s := range states {
			v := 0
			if s == d.st {
				v = 1
			}
			fmt.Fprintf(&b, "%s{destination=%q,set=\"%d\",state=%q} %d\n", stateFamily, d.uri, d.set, s, v)
		}
	}
	return b.String()
}

type dstState = struct {
	set int
	uri string
	st  State
}

func newMetered(t *testing.T, specs []Spec) (*Dispatcher, *Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	d, err := New(specs, discard, m)
	if err != nil {
		t.Fatal(err)
	}
	return d, m, reg
}

func TestMetricsState(t *testing.T) {
	const a, b = "sip:10.0.0.1", "sip:10.0.0.2"
	cfg := ProbeConfig{Threshold: 2, Recover: 1, ReplyCodes: []string{"2xx"}}
	d, m, reg := newMetered(t, []Spec{{SetID: 1, URI: a}, {SetID: 1, URI: b, Flags: flagInactive}})
	da, db := mustFind(t, d, 1, a), mustFind(t, d, 1, b)
	steps := []struct {
		name string
		do   func() error
		a, b State
	}{
		{"as loaded", func() error { return nil }, Active, Inactive},
		{"drain a", func() error { return d.SetState(1, a, Draining) }, Draining, Inactive},
		{"b recovers by probe", func() error { feed(d, cfg, db, 'S'); return nil }, Draining, Active},
		{"disable a", func() error { return d.SetState(1, a, Disabled) }, Disabled, Active},
		{"one failure is not enough", func() error { feed(d, cfg, db, 'F'); return nil }, Disabled, Active},
		{"b fails its probes", func() error { feed(d, cfg, db, 'F'); return nil }, Disabled, Inactive},
		{"enable a", func() error { return d.SetState(1, a, Active) }, Active, Inactive},
		{"no-op change", func() error { return d.SetState(1, a, Active) }, Active, Inactive},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := s.do(); err != nil {
				t.Fatal(err)
			}
			if da.State() != s.a || db.State() != s.b {
				t.Fatalf("states %v/%v, want %v/%v", da.State(), db.State(), s.a, s.b)
			}
			for _, dd := range []struct {
				uri string
				st  State
			}{{a, s.a}, {b, s.b}} {
				for _, st := range states {
					want := 0.0
					if st == dd.st {
						want = 1
					}
					if got := testutil.ToFloat64(m.state.WithLabelValues("1", dd.uri, st.String())); got != want {
						t.Errorf("%s{state=%s} = %v, want %v", dd.uri, st, got, want)
					}
				}
			}
			// And nothing else in the family.
			want := stateExposition(dstState{1, a, s.a}, dstState{1, b, s.b})
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), stateFamily); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestMetricsReload(t *testing.T) {
	const a, b, c = "sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"
	cfg := ProbeConfig{Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}}
	d, _, reg := newMetered(t, []Spec{{SetID: 1, URI: a}, {SetID: 1, URI: b}})
	oldA, oldB := mustFind(t, d, 1, a), mustFind(t, d, 1, b)
	if err := d.Reload([]Spec{{SetID: 1, URI: a}, {SetID: 2, URI: c, Flags: flagDisabled}}); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		want := stateExposition(dstState{1, a, Active}, dstState{2, c, Disabled})
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), stateFamily); err != nil {
			t.Error(err)
		}
	}
	t.Run("removed destination's series are gone", check)

	// Probes sent before the reload answer afterwards, on the objects the round started with.
	t.Run("late probe of a removed destination", func(t *testing.T) {
		d.probeResult(cfg, oldB, 0, fmt.Errorf("timeout"), time.Second)
		check(t)
	})
	t.Run("late probe of a replaced destination", func(t *testing.T) {
		d.probeResult(cfg, oldA, 0, fmt.Errorf("timeout"), time.Second)
		if st := mustFind(t, d, 1, a).State(); st != Active {
			t.Errorf("live destination %v after a probe of its predecessor", st)
		}
		check(t)
	})
}

func TestMetricsCountersAndLint(t *testing.T) {
	d, m, reg := newMetered(t, []Spec{{SetID: 1, URI: "sip:10.0.0.1"}, {SetID: 1, URI: "sip:10.0.0.2"}})
	cfg := ProbeConfig{Threshold: 3, Recover: 1, ReplyCodes: []string{"2xx"}}
	var buf []*Destination
	for range 3 {
		buf = d.Select(1, AlgRoundRobin, &Key{}, buf)
	}
	buf = d.Select(1, AlgPriority, &Key{}, buf)
	d.Select(9, AlgPriority, &Key{}, buf) // nothing chosen, nothing counted
	one := mustFind(t, d, 1, "sip:10.0.0.1")
	d.probeResult(cfg, one, 200, nil, 3*time.Millisecond)
	d.probeResult(cfg, one, 200, nil, 300*time.Millisecond)
	d.probeResult(cfg, one, 503, nil, time.Millisecond)

	counters := []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.decisions.WithLabelValues("1", "sip:10.0.0.1", "4"), 2},
		{m.decisions.WithLabelValues("1", "sip:10.0.0.2", "4"), 1},
		{m.decisions.WithLabelValues("1", "sip:10.0.0.1", "8"), 1},
		{m.probes.WithLabelValues("1", "sip:10.0.0.1", "ok"), 2},
		{m.probes.WithLabelValues("1", "sip:10.0.0.1", "fail"), 1},
	}
	for i, c := range counters {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("counter %d = %v, want %v", i, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.decisions); n != 3 {
		t.Errorf("%d decision series, want 3", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if mf.GetName() == "gateway_dispatcher_probe_rtt_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() < 0.302 || h.GetSampleSum() > 0.304 {
				t.Errorf("rtt histogram count %d sum %v, want 2 and 0.303", h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}
	want := []string{"gateway_dispatcher_decisions_total", "gateway_dispatcher_destination_state",
		"gateway_dispatcher_probe_rtt_seconds", "gateway_dispatcher_probes_total"}
	if !slices.Equal(names, want) {
		t.Fatalf("gathered families %v, want %v (lint must see all of them)", names, want)
	}

	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestNilMetrics(t *testing.T) {
	// A nil *Metrics is documented to record nothing: every path must tolerate it.
	d := newTest(t, specs4(1))
	dst := mustFind(t, d, 1, "sip:10.0.0.1")
	d.Select(1, AlgRoundRobin, &Key{}, nil)
	d.probeResult(ProbeConfig{Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}}, dst, 200, nil, time.Millisecond)
	d.probeResult(ProbeConfig{Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}}, dst, 500, nil, time.Millisecond)
	if err := d.SetState(1, dst.URI, Draining); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(specs4(1)); err != nil {
		t.Fatal(err)
	}
}
