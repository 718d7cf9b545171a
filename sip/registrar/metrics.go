package registrar

import "github.com/prometheus/client_golang/prometheus"

// Result labels of gateway_sip_register_total. A fixed set, so a flood of bad requests
// cannot grow the series count.
const (
	resultOK            = "ok"
	resultQuery         = "query"
	resultBadRequest    = "bad_request"
	resultTooBrief      = "interval_too_brief"
	resultTooMany       = "too_many_contacts"
	resultOutOfOrder    = "out_of_order"
	resultFirstHop      = "first_hop_lacks_outbound"
	resultStoreError    = "error"
	metricsNamespace    = "gateway"
	metricsSubsystemSIP = "sip"
)

var allResults = [...]string{resultOK, resultQuery, resultBadRequest, resultTooBrief, resultTooMany,
	resultOutOfOrder, resultFirstHop, resultStoreError}

type metrics struct {
	results *prometheus.CounterVec
}

// WithMetrics registers the registrar's series with reg: gateway_sip_registrations (the
// store's current binding count) and gateway_sip_register_total{result}. Register one
// Registrar per Registerer.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(r *Registrar) {
		m := &metrics{results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystemSIP, Name: "register_total",
			Help: "REGISTER requests processed after authentication, by result.",
		}, []string{"result"})}
		for _, res := range allResults {
			m.results.WithLabelValues(res)
		}
		store := r.store
		gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystemSIP, Name: "registrations",
			Help: "Contacts currently bound in the location service (including any expired since the last sweep).",
		}, func() float64 { return float64(store.Count()) })
		reg.MustRegister(m.results, gauge)
		r.metrics = m
	}
}

func (m *metrics) count(result string) {
	if m != nil {
		m.results.WithLabelValues(result).Inc()
	}
}
