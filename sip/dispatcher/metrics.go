package dispatcher

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatcher's Prometheus series. A nil *Metrics records nothing, which keeps
// unit tests free of registries.
type Metrics struct {
	state     *prometheus.GaugeVec
	decisions *prometheus.CounterVec
	probes    *prometheus.CounterVec
	probeRTT  *prometheus.HistogramVec
}

// NewMetrics registers the dispatcher series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "gateway", Subsystem: "dispatcher", Name: "destination_state",
			Help: "1 for the current state of each destination (active, inactive, draining, disabled).",
		}, []string{"set", "destination", "state"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "dispatcher", Name: "decisions_total",
			Help: "New calls given a first-choice destination, by set, destination and algorithm.",
		}, []string{"set", "destination", "algorithm"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "dispatcher", Name: "probes_total",
			Help: "OPTIONS health probes by destination and result (ok, fail).",
		}, []string{"set", "destination", "result"}),
		probeRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gateway", Subsystem: "dispatcher", Name: "probe_rtt_seconds",
			Help:    "Round-trip time of successful OPTIONS probes.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2},
		}, []string{"set", "destination"}),
	}
	reg.MustRegister(m.state, m.decisions, m.probes, m.probeRTT)
	return m
}

var states = []State{Active, Inactive, Draining, Disabled}

func (m *Metrics) setState(d *Destination, st State) {
	if m == nil {
		return
	}
	set := strconv.Itoa(d.SetID)
	for _, s := range states {
		v := 0.0
		if s == st {
			v = 1
		}
		m.state.WithLabelValues(set, d.URI, s.String()).Set(v)
	}
}

// forgetDestinations drops state series so destinations removed by a reload disappear.
func (m *Metrics) forgetDestinations() {
	if m == nil {
		return
	}
	m.state.Reset()
}

func (m *Metrics) decision(d *Destination, alg Algorithm) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(strconv.Itoa(d.SetID), d.URI, strconv.Itoa(int(alg))).Inc()
}

func (m *Metrics) probe(d *Destination, ok bool) {
	if m == nil {
		return
	}
	r := "fail"
	if ok {
		r = "ok"
	}
	m.probes.WithLabelValues(strconv.Itoa(d.SetID), d.URI, r).Inc()
}

func (m *Metrics) observeRTT(d *Destination, rtt time.Duration) {
	if m == nil {
		return
	}
	m.probeRTT.WithLabelValues(strconv.Itoa(d.SetID), d.URI).Observe(rtt.Seconds())
}
