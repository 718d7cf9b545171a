package guard

import "github.com/prometheus/client_golang/prometheus"

// metrics are the guard's series. Labels are fixed enums: sources never become labels, or a
// spoofed-source flood would become a cardinality explosion in Prometheus as well.
type metrics struct {
	banFlood, banAuth, banAuthUser, banAdmin prometheus.Counter
	banned                                   prometheus.Gauge
	authFailures                             prometheus.Counter
}

func newMetrics(g *Guard, reg prometheus.Registerer) (*metrics, error) {
	bans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gateway", Subsystem: "sip_guard", Name: "bans_total",
		Help: "Sources banned, by reason (flood, auth, auth_user, admin).",
	}, []string{"reason"})
	m := &metrics{
		banFlood:    bans.WithLabelValues(ReasonFlood),
		banAuth:     bans.WithLabelValues(ReasonAuth),
		banAuthUser: bans.WithLabelValues(ReasonAuthUser),
		banAdmin:    bans.WithLabelValues(ReasonAdmin),
		banned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gateway", Subsystem: "sip_guard", Name: "banned",
			Help: "Sources currently banned (IPv4 addresses and IPv6 /64s).",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip_guard", Name: "auth_failures_total",
			Help: "Digest authentication failures reported to the guard.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{bans, m.banned, m.authFailures, newShardCollector(g)} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// shardCollector reports the counters kept per shard, summed at scrape time: the request path
// then only touches its own shard's cache line.
type shardCollector struct {
	g                           *Guard
	dropped, evictions, sources *prometheus.Desc
}

func newShardCollector(g *Guard) *shardCollector {
	return &shardCollector{
		g: g,
		dropped: prometheus.NewDesc("gateway_sip_guard_dropped_total",
			"Requests dropped without an answer, by reason (rate, banned, scanner).", []string{"reason"}, nil),
		evictions: prometheus.NewDesc("gateway_sip_guard_evictions_total",
			"Tracked sources forgotten early to stay under max_sources; a steady rise means a "+
				"spoofed-source flood or a max_sources too small for the traffic.", nil, nil),
		sources: prometheus.NewDesc("gateway_sip_guard_sources",
			"Sources currently tracked (IPv4 addresses and IPv6 /64s).", nil, nil),
	}
}

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dropped
	ch <- c.evictions
	ch <- c.sources
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.stats()
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.rate), "rate")
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.banned), "banned")
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.scanner), "scanner")
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(s.evictions))
	ch <- prometheus.MustNewConstMetric(c.sources, prometheus.GaugeValue, float64(s.sources))
}
