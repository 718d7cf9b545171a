package registrar

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	phoneA = "Contact: <sip:alice@192.168.1.10:5060>"
	phoneB = "Contact: <sip:alice@192.168.1.11:5060;transport=tcp>"
)

func TestQueryWithoutContact(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "Expires: 600"), udpSrc), 200)
	f.clock.Advance(100 * time.Second)

	res := f.do(t, msg(t, "c1", 2), udpSrc)
	mustStatus(t, res, 200)
	want := map[string]string{"sip:alice@192.168.1.10:5060": "500"}
	if got := contacts(t, res); !maps.Equal(got, want) {
		t.Fatalf("query contacts %v, want %v", got, want)
	}
	if len(res.Bindings) != 1 || f.store.Count() != 1 {
		t.Fatalf("query changed something: %d bindings, %d stored", len(res.Bindings), f.store.Count())
	}
	if _, ok := header(res, "Date"); !ok {
		t.Error("no Date header")
	}

	// A query of an unknown user is a 200 with no Contact.
	res = f.reg.Register(msg(t, "c9", 1), "nobody", udpSrc)
	mustStatus(t, res, 200)
	if len(contacts(t, res)) != 0 {
		t.Fatalf("contacts for unknown AOR: %v", contacts(t, res))
	}
}

func TestWildcard(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA), udpSrc), 200)
	mustStatus(t, f.do(t, msg(t, "c2", 1, phoneB), udpSrc), 200)

	for name, lines := range map[string][]string{
		"nonzero Expires":  {"Contact: *", "Expires: 60"},
		"no Expires":       {"Contact: *"},
		"with contacts":    {"Contact: *", phoneA, "Expires: 0"},
		"list with others": {"Contact: *, <sip:x@192.0.2.1>", "Expires: 0"},
	} {
		t.Run(name, func(t *testing.T) {
			mustStatus(t, f.do(t, msg(t, "c3", 1, lines...), udpSrc), 400)
			if n := f.store.Count(); n != 2 {
				t.Fatalf("a refused * changed the bindings: %d left", n)
			}
		})
	}

	// Call-ID c1 at CSeq 1 is stored: a * in the same call must be newer (§10.3 step 6).
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: *", "Expires: 0"), udpSrc), 500)
	if n := f.store.Count(); n != 2 {
		t.Fatalf("out-of-order * removed bindings: %d left", n)
	}

	res := f.do(t, msg(t, "c1", 2, "Contact: *", "Expires: 0"), udpSrc)
	mustStatus(t, res, 200)
	if n := f.store.Count(); n != 0 || len(res.Bindings) != 0 || len(contacts(t, res)) != 0 {
		t.Fatalf("after *: %d stored, %d in result", n, len(res.Bindings))
	}
}

func TestExpiresPrecedence(t *testing.T) {
	f := newFixture(Config{})
	res := f.do(t, msg(t, "c1", 1,
		"Contact: <sip:alice@192.0.2.1>;expires=300, <sip:alice@192.0.2.2>, <sip:alice@192.0.2.3>;EXPIRES=9999",
		"Expires: 120"), udpSrc)
	mustStatus(t, res, 200)
	want := map[string]string{
		"sip:alice@192.0.2.1": "300",  // Contact parameter wins over the header
		"sip:alice@192.0.2.2": "120",  // header when the Contact has none
		"sip:alice@192.0.2.3": "3600", // clamped to MaxExpires
	}
	if got := contacts(t, res); !maps.Equal(got, want) {
		t.Fatalf("contacts %v, want %v", got, want)
	}

	g := newFixture(Config{DefaultExpires: 1800 * time.Second})
	res = g.do(t, msg(t, "c1", 1, phoneA), udpSrc)
	if got := contacts(t, res)["sip:alice@192.168.1.10:5060"]; got != "1800" {
		t.Fatalf("no expiry given: expires=%s, want the default 1800", got)
	}
	b := g.store.Lookup("alice")[0]
	if want := g.clock.Now().Add(1800 * time.Second); !b.Expires.Equal(want) {
		t.Fatalf("stored expiry %v, want %v", b.Expires, want)
	}

	// RFC 3261 §20.10/§20.19: a malformed value counts as 3600.
	h := newFixture(Config{MaxExpires: 7200 * time.Second})
	res = h.do(t, msg(t, "c1", 1, phoneA+";expires=soon"), udpSrc)
	if got := contacts(t, res)["sip:alice@192.168.1.10:5060"]; got != "3600" {
		t.Fatalf("malformed expires gave %s, want 3600", got)
	}
}

func TestExpiresZeroRemovesOneContact(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, phoneB), udpSrc), 200)
	res := f.do(t, msg(t, "c1", 2, phoneA+";expires=0"), udpSrc)
	mustStatus(t, res, 200)
	if got := uris(res.Bindings); !slices.Equal(got, []string{"sip:alice@192.168.1.11:5060;transport=tcp"}) {
		t.Fatalf("left %v", got)
	}
	// Expires: 0 in the header applies to contacts without their own parameter.
	mustStatus(t, f.do(t, msg(t, "c1", 3, phoneB, "Expires: 0"), udpSrc), 200)
	if n := f.store.Count(); n != 0 {
		t.Fatalf("%d left", n)
	}
	// Removing what is not there is fine.
	mustStatus(t, f.do(t, msg(t, "c1", 4, phoneB, "Expires: 0"), udpSrc), 200)
}

func TestIntervalTooBrief(t *testing.T) {
	f := newFixture(Config{MinExpires: 90 * time.Second})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "Expires: 600"), udpSrc), 200)
	before := f.store.Lookup("alice")

	// One acceptable contact and one too brief: nothing at all changes.
	res := f.do(t, msg(t, "c1", 2, phoneA+";expires=0", phoneB+";expires=30"), udpSrc)
	mustStatus(t, res, 423)
	if v, ok := header(res, "Min-Expires"); !ok || v != "90" {
		t.Fatalf("Min-Expires %q (present %v), want 90", v, ok)
	}
	after := f.store.Lookup("alice")
	if !slices.Equal(uris(after), uris(before)) || !after[0].Expires.Equal(before[0].Expires) {
		t.Fatalf("423 changed bindings: %v -> %v", uris(before), uris(after))
	}
	// The header counts too, and zero is never too brief.
	mustStatus(t, f.do(t, msg(t, "c1", 3, phoneB, "Expires: 89"), udpSrc), 423)
	mustStatus(t, f.do(t, msg(t, "c1", 4, phoneB, "Expires: 90"), udpSrc), 200)
	mustStatus(t, f.do(t, msg(t, "c1", 5, phoneA, "Expires: 0"), udpSrc), 200)
}

func TestCallIDCSeqOrdering(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "call-A", 10, phoneA), udpSrc), 200)

	for _, cseq := range []int{10, 9, 1} {
		res := f.do(t, msg(t, "call-A", cseq, phoneA+";expires=0"), udpSrc)
		mustStatus(t, res, 500)
		if f.store.Count() != 1 {
			t.Fatalf("CSeq %d removed the binding", cseq)
		}
	}
	// Out of order aborts the whole request, including contacts that would be new.
	mustStatus(t, f.do(t, msg(t, "call-A", 10, phoneB, phoneA), udpSrc), 500)
	if f.store.Count() != 1 {
		t.Fatal("an aborted request added a binding")
	}
	mustStatus(t, f.do(t, msg(t, "call-A", 11, phoneA), udpSrc), 200)
	if b := f.store.Lookup("alice")[0]; b.CSeq != 11 || b.CallID != "call-A" {
		t.Fatalf("binding has %s/%d", b.CallID, b.CSeq)
	}
	// A different Call-ID (a rebooted phone) replaces the binding whatever its CSeq.
	mustStatus(t, f.do(t, msg(t, "call-B", 1, phoneA), udpSrc), 200)
	if b := f.store.Lookup("alice"); len(b) != 1 || b[0].CallID != "call-B" || b[0].CSeq != 1 {
		t.Fatalf("after new Call-ID: %+v", b)
	}
	// The rule is per binding: a new contact in the old call is not compared with others.
	mustStatus(t, f.do(t, msg(t, "call-A", 2, phoneB), udpSrc), 200)
}

func TestQValues(t *testing.T) {
	f := newFixture(Config{})
	for _, bad := range []string{"1.5", "0.1234", "abc", "-0.5", "1.01", "", ".5", "2"} {
		res := f.do(t, msg(t, "c1", 1, phoneA+";q="+bad), udpSrc)
		if res.Status != 400 {
			t.Errorf("q=%q: status %d, want 400", bad, res.Status)
		}
	}
	if f.store.Count() != 0 {
		t.Fatal("an invalid q stored a binding")
	}

	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@192.0.2.1>;q=0.5"), udpSrc), 200)
	f.clock.Advance(time.Second)
	mustStatus(t, f.do(t, msg(t, "c1", 2, "Contact: <sip:alice@192.0.2.2>;q=1.0"), udpSrc), 200)
	f.clock.Advance(time.Second)
	mustStatus(t, f.do(t, msg(t, "c1", 3, "Contact: <sip:alice@192.0.2.3>;q=0.5"), udpSrc), 200)
	f.clock.Advance(time.Second)
	res := f.do(t, msg(t, "c1", 4, "Contact: <sip:alice@192.0.2.4>;Q=0.125"), udpSrc)
	mustStatus(t, res, 200)
	f.clock.Advance(time.Second)
	mustStatus(t, f.do(t, msg(t, "c1", 5, "Contact: <sip:alice@192.0.2.5>"), udpSrc), 200)

	bs := f.store.Lookup("alice")
	want := []string{"sip:alice@192.0.2.5", "sip:alice@192.0.2.2", "sip:alice@192.0.2.3", "sip:alice@192.0.2.1", "sip:alice@192.0.2.4"}
	if got := uris(bs); !slices.Equal(got, want) {
		t.Fatalf("Lookup order %v, want %v (q desc, then most recent)", got, want)
	}
	if bs[4].Q != 0.125 || bs[0].Q != 1 {
		t.Fatalf("q values %v and %v", bs[4].Q, bs[0].Q)
	}
	for _, h := range res.Headers {
		if strings.Contains(h.Value(), "192.0.2.4") && !strings.Contains(h.Value(), ";q=0.125") {
			t.Fatalf("200 Contact lacks its q: %s", h.Value())
		}
	}
}

const instance = `+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"`

func TestOutboundInstanceReplacesFlow(t *testing.T) {
	f := newFixture(Config{})
	first := Source{Addr: netip.MustParseAddrPort("203.0.113.7:40001"), Transport: "TCP", LocalAddr: "198.51.100.1:5060", ConnID: "tcp-1"}
	res := f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@10.0.0.5:51000;transport=tcp;ob>;reg-id=1;"+instance, "Supported: path, outbound"), first)
	mustStatus(t, res, 200)
	if v, _ := header(res, "Require"); v != "outbound" {
		t.Fatalf("Require %q, want outbound", v)
	}

	// The NAT mapping and the phone's port changed: a new Contact URI for the same flow.
	second := Source{Addr: netip.MustParseAddrPort("203.0.113.7:40999"), Transport: "TCP", LocalAddr: "198.51.100.1:5060", ConnID: "tcp-2"}
	res = f.do(t, msg(t, "c2", 1, "Contact: <sip:alice@10.0.0.5:52000;transport=tcp;ob>;reg-id=1;"+instance), second)
	mustStatus(t, res, 200)
	bs := f.store.Lookup("alice")
	if len(bs) != 1 {
		t.Fatalf("%d bindings, want the flow replaced: %v", len(bs), uris(bs))
	}
	b := bs[0]
	if b.Contact.Port != 52000 || b.Source != second.Addr || b.ConnID != "tcp-2" || b.RegID != 1 ||
		b.Instance != "urn:uuid:00000000-0000-1000-8000-000A95A0E128" {
		t.Fatalf("binding %+v", b)
	}
	if !strings.Contains(res.Headers[0].Value(), instance) || !strings.Contains(res.Headers[0].Value(), "reg-id=1") {
		t.Fatalf("200 Contact does not carry the instance and reg-id: %s", res.Headers[0].Value())
	}
	// Without Supported: outbound, no Require.
	if _, ok := header(res, "Require"); ok {
		t.Fatal("Require without Supported: outbound")
	}
	// The old connection closing must not take the new flow with it.
	if n := f.store.DropConn("tcp-1"); n != 0 || f.store.Count() != 1 {
		t.Fatalf("DropConn of the old connection removed %d", n)
	}

	// A second flow of the same instance (reg-id 2) with the very same URI is a second binding.
	mustStatus(t, f.do(t, msg(t, "c3", 1, "Contact: <sip:alice@10.0.0.5:52000;transport=tcp;ob>;reg-id=2;"+instance), second), 200)
	if n := f.store.Count(); n != 2 {
		t.Fatalf("%d bindings, want 2 flows", n)
	}
	// Unregistering one flow leaves the other.
	mustStatus(t, f.do(t, msg(t, "c3", 2, "Contact: <sip:alice@10.0.0.5:52000;transport=tcp;ob>;reg-id=2;expires=0;"+instance), second), 200)
	if bs := f.store.Lookup("alice"); len(bs) != 1 || bs[0].RegID != 1 {
		t.Fatalf("left %+v", bs)
	}
}

func TestInstanceWithoutRegIDKeysByURI(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@10.0.0.5:5060>;"+instance), udpSrc), 200)
	mustStatus(t, f.do(t, msg(t, "c1", 2, "Contact: <sip:alice@10.0.0.5:5070>;"+instance), udpSrc), 200)
	if n := f.store.Count(); n != 2 {
		t.Fatalf("%d bindings; an instance without reg-id must not replace by instance (RFC 5626 §6)", n)
	}
	// A reg-id without an instance is ignored.
	mustStatus(t, f.do(t, msg(t, "c1", 3, "Contact: <sip:alice@10.0.0.6>;reg-id=1"), udpSrc), 200)
	for _, b := range f.store.Lookup("alice") {
		if b.RegID != 0 {
			t.Fatalf("reg-id kept without instance: %+v", b)
		}
	}
	for _, bad := range []string{"reg-id=0", "reg-id=x", "reg-id=2147483648"} {
		mustStatus(t, f.do(t, msg(t, "c1", 4, "Contact: <sip:alice@10.0.0.7>;"+bad+";"+instance), udpSrc), 400)
	}
}

func TestOutboundValidation(t *testing.T) {
	f := newFixture(Config{})
	// RFC 5626 §6: one REGISTER, one flow.
	mustStatus(t, f.do(t, msg(t, "c1", 1,
		"Contact: <sip:alice@10.0.0.5>;reg-id=1;"+instance+", <sip:alice@10.0.0.6>"), udpSrc), 400)
	// Removing others alongside registering the flow is allowed.
	mustStatus(t, f.do(t, msg(t, "c1", 2,
		"Contact: <sip:alice@10.0.0.5>;reg-id=1;"+instance+", <sip:alice@10.0.0.6>;expires=0"), udpSrc), 200)

	proxied := "Via: SIP/2.0/UDP edge.example:5060;branch=z9hG4bKedge, SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKua"
	flow := "Contact: <sip:alice@10.0.0.9>;reg-id=1;" + instance
	// Behind a proxy that is not an outbound edge, with the UA asking for outbound: 439.
	mustStatus(t, f.do(t, msg(t, "c2", 1, proxied, flow, "Supported: outbound"), udpSrc), 439)
	mustStatus(t, f.do(t, msg(t, "c2", 2, proxied, flow, "Path: <sip:edge.example;lr>", "k: outbound"), udpSrc), 439)
	// Without Supported: outbound the reg-id is ignored instead.
	mustStatus(t, f.do(t, msg(t, "c2", 3, proxied, flow), udpSrc), 200)
	if b := f.lookup(t, "sip:alice@10.0.0.9"); b.RegID != 0 {
		t.Fatalf("reg-id kept without outbound edge: %+v", b)
	}
	// An outbound edge (first Path URI with ;ob) makes it apply.
	mustStatus(t, f.do(t, msg(t, "c2", 4, proxied, "Contact: <sip:alice@10.0.0.10>;reg-id=1;"+instance,
		"Path: <sip:edge.example;lr;ob>", "Supported: outbound, path"), udpSrc), 200)
	if b := f.lookup(t, "sip:alice@10.0.0.10"); b.RegID != 1 {
		t.Fatalf("reg-id lost behind an outbound edge: %+v", b)
	}
}

func (f *fixture) lookup(t *testing.T, uri string) Binding {
	t.Helper()
	for _, b := range f.store.Lookup("alice") {
		if b.Contact.String() == uri {
			return b
		}
	}
	t.Fatalf("no binding %s among %v", uri, uris(f.store.Lookup("alice")))
	return Binding{}
}

func TestContactURIMatching(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:Alice@Phone.Example:5060;transport=TCP;foo=1>"), udpSrc), 200)
	same := []string{
		"<sip:Alice@phone.example:5060;transport=tcp;foo=1>",
		"<SIP:Alice@PHONE.EXAMPLE:5060;transport=tcp>", // foo only on one side: ignored
		"<sip:Alice@phone.example:5060;foo=1;transport=tcp>",
		`"Alice" <sip:Alice@phone.example:5060;transport=tcp;ob>`,
	}
	for i, c := range same {
		mustStatus(t, f.do(t, msg(t, "c1", 2+i, "Contact: "+c), udpSrc), 200)
		if n := f.store.Count(); n != 1 {
			t.Fatalf("%s did not match the stored contact: %v", c, uris(f.store.Lookup("alice")))
		}
	}
	different := []string{
		"<sip:alice@phone.example:5060;transport=tcp>",         // user is case-sensitive
		"<sip:Alice@phone.example;transport=tcp>",              // absent port is not 5060
		"<sip:Alice@phone.example:5060>",                       // transport on one side only
		"<sip:Alice@phone.example:5060;transport=tcp;foo=2>",   // a shared parameter differs
		"<sips:Alice@phone.example:5060;transport=tcp>",        // scheme
		"<sip:Alice@phone.example:5060;transport=tcp;user=ip>", // user parameter on one side
		"sip:Alice@phone.example:5060;transport=tcp",           // no brackets: transport is a header parameter
	}
	for _, c := range different {
		g := newFixture(Config{})
		mustStatus(t, g.do(t, msg(t, "c1", 1, "Contact: <sip:Alice@Phone.Example:5060;transport=TCP;foo=1>"), udpSrc), 200)
		mustStatus(t, g.do(t, msg(t, "c1", 2, "Contact: "+c), udpSrc), 200)
		if n := g.store.Count(); n != 2 {
			t.Fatalf("%s matched the stored contact", c)
		}
	}
	mustStatus(t, f.do(t, msg(t, "c9", 1, "Contact: <tel:+15551234>"), udpSrc), 400)
}

func TestMaxContacts(t *testing.T) {
	f := newFixture(Config{MaxContacts: 2})
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@192.0.2.1>"), udpSrc), 200)
	mustStatus(t, f.do(t, msg(t, "c2", 1, "Contact: <sip:alice@192.0.2.2>"), udpSrc), 200)
	res := f.do(t, msg(t, "c3", 1, "Contact: <sip:alice@192.0.2.3>"), udpSrc)
	mustStatus(t, res, 403)
	if got := uris(f.store.Lookup("alice")); len(got) != 2 || slices.Contains(got, "sip:alice@192.0.2.3") {
		t.Fatalf("refused request changed bindings: %v", got)
	}
	// Replacing one within the same request keeps the count and is fine.
	mustStatus(t, f.do(t, msg(t, "c1", 2, "Contact: <sip:alice@192.0.2.1>;expires=0, <sip:alice@192.0.2.3>"), udpSrc), 200)
	// Refreshes are allowed even when a lowered limit is already exceeded.
	low := New(Config{MaxContacts: 1}, f.store)
	mustStatus(t, low.Register(msg(t, "c2", 2, "Contact: <sip:alice@192.0.2.2>"), "alice", udpSrc), 200)
	mustStatus(t, low.Register(msg(t, "c4", 1, "Contact: <sip:alice@192.0.2.4>"), "alice", udpSrc), 403)
	// The limit is per AOR.
	mustStatus(t, f.reg.Register(msg(t, "c5", 1, "Contact: <sip:bob@192.0.2.9>"), "bob", udpSrc), 200)
}

func TestPath(t *testing.T) {
	f := newFixture(Config{})
	res := f.do(t, msg(t, "c1", 1, phoneA,
		`Path: <sip:p1.example;lr>, "Edge, Two" <sip:p2.example;lr>`,
		"Path: <sip:p3.example;lr;ob>",
		"Supported: path"), udpSrc)
	mustStatus(t, res, 200)
	want := []string{"<sip:p1.example;lr>", `"Edge, Two" <sip:p2.example;lr>`, "<sip:p3.example;lr;ob>"}
	if got := f.store.Lookup("alice")[0].Path; !slices.Equal(got, want) {
		t.Fatalf("stored Path %q, want %q", got, want)
	}
	if v, _ := header(res, "Path"); v != strings.Join(want, ", ") {
		t.Fatalf("echoed Path %q", v)
	}
	// Stored but not echoed to a UA that did not say it supports path (RFC 3327 §5.3).
	res = f.do(t, msg(t, "c1", 2, phoneA, "Path: <sip:p9.example;lr>"), udpSrc)
	mustStatus(t, res, 200)
	if _, ok := header(res, "Path"); ok {
		t.Fatal("Path echoed without Supported: path")
	}
	if got := f.store.Lookup("alice")[0].Path; !slices.Equal(got, []string{"<sip:p9.example;lr>"}) {
		t.Fatalf("stored Path %q", got)
	}
	// A refresh without Path clears it: the route set is whatever the last REGISTER took.
	mustStatus(t, f.do(t, msg(t, "c1", 3, phoneA), udpSrc), 200)
	if got := f.store.Lookup("alice")[0].Path; got != nil {
		t.Fatalf("Path %q after a REGISTER without one", got)
	}
}

func TestSourceRecordedAndUpdated(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "User-Agent: Yealink T46U 66.86"), udpSrc), 200)
	b := f.store.Lookup("alice")[0]
	if b.Source != udpSrc.Addr || b.Transport != "UDP" || b.LocalAddr != udpSrc.LocalAddr || b.ConnID != "" ||
		b.UserAgent != "Yealink T46U 66.86" || b.AOR != "alice" {
		t.Fatalf("binding %+v", b)
	}
	moved := Source{Addr: netip.MustParseAddrPort("[2001:db8::7]:41000"), Transport: "wss", LocalAddr: "[2001:db8::1]:443", ConnID: "ws-9"}
	f.clock.Advance(30 * time.Second)
	mustStatus(t, f.do(t, msg(t, "c1", 2, phoneA), moved), 200)
	bs := f.store.Lookup("alice")
	if len(bs) != 1 {
		t.Fatalf("%d bindings", len(bs))
	}
	b = bs[0]
	if b.Source != moved.Addr || b.Transport != "WSS" || b.LocalAddr != moved.LocalAddr || b.ConnID != "ws-9" ||
		!b.Registered.Equal(f.clock.Now()) {
		t.Fatalf("binding not updated from the new source: %+v", b)
	}
}

func TestOKListsEveryBindingWithRemainingExpiry(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "Expires: 600"), udpSrc), 200)
	f.clock.Advance(200*time.Second + 300*time.Millisecond)
	res := f.do(t, msg(t, "c2", 1, phoneB, "Expires: 300"), udpSrc)
	mustStatus(t, res, 200)
	want := map[string]string{
		"sip:alice@192.168.1.10:5060":               "400", // 399.7s left, rounded up
		"sip:alice@192.168.1.11:5060;transport=tcp": "300",
	}
	if got := contacts(t, res); !maps.Equal(got, want) {
		t.Fatalf("contacts %v, want %v", got, want)
	}
	if len(res.Bindings) != 2 {
		t.Fatalf("result bindings %v", uris(res.Bindings))
	}
}

func TestConcurrentRegisters(t *testing.T) {
	f := newFixture(Config{MaxContacts: 1000})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				aor := fmt.Sprintf("user%d", i%5)
				req := msg(t, fmt.Sprintf("g%d", g), i+1, fmt.Sprintf("Contact: <sip:%s@10.0.%d.%d>", aor, g, i))
				if res := f.reg.Register(req, aor, udpSrc); res.Status != 200 {
					t.Errorf("status %d", res.Status)
				}
				f.store.Lookup(aor)
				f.store.Sweep()
			}
		})
	}
	wg.Wait()
	if n := f.store.Count(); n != 400 || len(f.store.All()) != 400 {
		t.Fatalf("count %d, all %d, want 400", n, len(f.store.All()))
	}
}

func TestConfigDefaults(t *testing.T) {
	r := New(Config{}, NewMemoryStore(nil))
	want := Config{MinExpires: 60 * time.Second, MaxExpires: 3600 * time.Second, DefaultExpires: 3600 * time.Second, MaxContacts: 10}
	if r.Config() != want {
		t.Fatalf("defaults %+v", r.Config())
	}
	r = New(Config{MinExpires: 600 * time.Second, MaxExpires: 300 * time.Second, DefaultExpires: 30 * time.Second}, NewMemoryStore(nil))
	if c := r.Config(); c.MaxExpires != 600*time.Second || c.DefaultExpires != 600*time.Second {
		t.Fatalf("inconsistent config not repaired: %+v", c)
	}
}

func TestParsers(t *testing.T) {
	for in, want := range map[string]uint16{"0": 0, "1": 1000, "0.5": 500, "0.05": 50, "0.125": 125, "1.000": 1000, "0.": 0, "1.": 1000} {
		if got, ok := parseQ(in); !ok || got != want {
			t.Errorf("parseQ(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	for in, want := range map[string]uint32{"0": 0, "3600": 3600, " 60 ": 60, "99999999999": 1<<32 - 1} {
		if got, ok := parseDelta(in); !ok || got != want {
			t.Errorf("parseDelta(%q) = %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "1h", "3.5"} {
		if _, ok := parseDelta(in); ok {
			t.Errorf("parseDelta(%q) accepted", in)
		}
	}
	if got := splitList(` <sip:a;lr>,"x,\"y" <sip:b>, ,<sip:c;p="1,2">`); !slices.Equal(got, []string{"<sip:a;lr>", `"x,\"y" <sip:b>`, `<sip:c;p="1,2">`}) {
		t.Errorf("splitList %q", got)
	}
}
