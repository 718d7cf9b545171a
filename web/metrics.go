package web

import (
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the HTTP plane's own series (namespace gateway, subsystem http).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	limited  *prometheus.CounterVec

	// The series of each route and status seen so far, so a request costs one map lookup and
	// not a label hash and lookup per vector (route patterns and codes are few). The map is
	// replaced, never changed, when a pair is new: readers take no lock.
	mu     sync.Mutex // serialises replacing series
	series atomic.Pointer[map[routeStatus]requestSeries]
}

type routeStatus struct {
	route  string
	status int
}

type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gateway", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP request handling time by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "http", Name: "rate_limited_total",
			Help: "HTTP requests or connections refused by the HTTP plane's limits, by limit (all, login, refresh, ws, ws_per_user, connections, lockout) and the client's address class (default or an http.rate_limit.networks name).",
		}, []string{"limit", "class"}),
	}
	reg.MustRegister(m.requests, m.duration, m.limited)
	m.series.Store(&map[routeStatus]requestSeries{})
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	k := routeStatus{route, status}
	rs, ok := (*m.series.Load())[k]
	if !ok {
		rs = m.seriesOf(k)
	}
	rs.requests.Inc()
	rs.duration.Observe(d.Seconds())
}

// seriesOf adds the series of a new route and status to the map.
func (m *metrics) seriesOf(k routeStatus) requestSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.series.Load()
	if rs, ok := old[k]; ok {
		return rs
	}
	rs := requestSeries{m.requests.WithLabelValues(k.route, strconv.Itoa(k.status)), m.duration.WithLabelValues(k.route)}
	next := make(map[routeStatus]requestSeries, len(old)+1)
	maps.Copy(next, old)
	next[k] = rs
	m.series.Store(&next)
	return rs
}
