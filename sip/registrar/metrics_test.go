package registrar

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clock := newClock()
	store := NewMemoryStore(clock.Now)
	r := New(Config{}, store, WithMetrics(reg))

	r.Register(msg(t, "c1", 1, phoneA), "alice", udpSrc)
	r.Register(msg(t, "c1", 2, phoneB), "alice", udpSrc)
	r.Register(msg(t, "c1", 3), "alice", udpSrc)
	r.Register(msg(t, "c1", 4, phoneA+";q=7"), "alice", udpSrc)
	r.Register(msg(t, "c1", 4, phoneA+";expires=5"), "alice", udpSrc)

	want := `
# HELP gateway_sip_register_total REGISTER requests processed after authentication, by result.
# TYPE gateway_sip_register_total counter
gateway_sip_register_total{result="bad_request"} 1
gateway_sip_register_total{result="error"} 0
gateway_sip_register_total{result="first_hop_lacks_outbound"} 0
gateway_sip_register_total{result="interval_too_brief"} 1
gateway_sip_register_total{result="ok"} 2
gateway_sip_register_total{result="out_of_order"} 0
gateway_sip_register_total{result="query"} 1
gateway_sip_register_total{result="too_many_contacts"} 0
# HELP gateway_sip_registrations Contacts currently bound in the location service (including any expired since the last sweep).
# TYPE gateway_sip_registrations gauge
gateway_sip_registrations 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestNoMetrics(t *testing.T) {
	r := New(Config{}, NewMemoryStore(nil))
	if res := r.Register(msg(t, "c1", 1, phoneA), "alice", udpSrc); res.Status != 200 {
		t.Fatalf("status %d", res.Status)
	}
}
