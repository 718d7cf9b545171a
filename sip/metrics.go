package sip

import "github.com/prometheus/client_golang/prometheus"

// metrics are the SIP plane's own series (namespace gateway, subsystem sip).
type metrics struct {
	requests     *prometheus.CounterVec
	replies      *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	failovers    prometheus.Counter
	branchFail   *prometheus.CounterVec
	setup        *prometheus.HistogramVec
	dialogs      prometheus.Gauge
	dialogsEnded *prometheus.CounterVec
	auth         *prometheus.CounterVec
	keepalives   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "requests_total",
			Help: "SIP requests received, by method.",
		}, []string{"method"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "replies_total",
			Help: "SIP responses sent upstream (relayed or generated), by method and status code.",
		}, []string{"method", "code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "rejected_total",
			Help: "Requests answered or dropped by the router itself, by reason.",
		}, []string{"reason"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "failovers_total",
			Help: "Times a request was retried on the next destination.",
		}),
		branchFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "branch_failures_total",
			Help: "Relayed branches that failed, by reason (timeout, ring_timeout, transport, or status code).",
		}, []string{"reason"}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "call_setup_seconds",
			Help:    "Time from relaying an INVITE to a backend until its 2xx, by backend.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"backend"}),
		dialogs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "dialogs_active",
			Help: "Calls the proxy currently tracks (early and confirmed).",
		}),
		dialogsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "dialogs_ended_total",
			Help: "Tracked calls that ended, by reason (bye, failed, max_duration, replaced).",
		}, []string{"reason"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "auth_total",
			Help: "Digest authentication outcomes (ok, challenged, stale, failed, unproven, malformed, from_mismatch); unproven answers (a nonce not sent to their source) never count toward bans.",
		}, []string{"result"}),
		keepalives: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gateway", Subsystem: "sip", Name: "nat_keepalives_total",
			Help: "OPTIONS keepalives sent to bindings registered over UDP.",
		}),
	}
	reg.MustRegister(m.requests, m.replies, m.rejected, m.failovers, m.branchFail, m.setup, m.dialogs,
		m.dialogsEnded, m.auth, m.keepalives)
	return m
}
