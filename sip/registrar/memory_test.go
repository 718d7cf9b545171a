package registrar

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

func TestExpiryOnTime(t *testing.T) {
	var mu sync.Mutex
	var expired []string
	f := newFixture(Config{MinExpires: time.Second}, WithExpiryHook(func(bs []Binding) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range bs {
			expired = append(expired, b.AOR+" "+b.Contact.String())
		}
	}))
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@192.0.2.1>;expires=60"), udpSrc), 200)
	mustStatus(t, f.do(t, msg(t, "c1", 2, "Contact: <sip:alice@192.0.2.2>;expires=120"), udpSrc), 200)
	mustStatus(t, f.reg.Register(msg(t, "c2", 1, "Contact: <sip:bob@192.0.2.3>;expires=90"), "bob", udpSrc), 200)

	f.clock.Advance(59 * time.Second)
	if n := f.store.Sweep(); n != 0 || len(f.store.Lookup("alice")) != 2 {
		t.Fatalf("swept %d before anything expired", n)
	}
	// Expired but not yet swept: Lookup and All must not return it.
	f.clock.Advance(time.Second)
	if got := uris(f.store.Lookup("alice")); !slices.Equal(got, []string{"sip:alice@192.0.2.2"}) {
		t.Fatalf("Lookup at expiry returned %v", got)
	}
	if n := len(f.store.All()); n != 2 {
		t.Fatalf("All returned %d, want 2 unexpired", n)
	}
	if n := f.store.Count(); n != 3 {
		t.Fatalf("Count %d before the sweep, want 3 stored", n)
	}
	if n := f.store.Sweep(); n != 1 || f.store.Count() != 2 {
		t.Fatalf("sweep removed %d, count %d", n, f.store.Count())
	}
	f.clock.Advance(time.Hour)
	if n := f.store.Sweep(); n != 2 || f.store.Count() != 0 || len(f.store.All()) != 0 {
		t.Fatalf("sweep removed %d, count %d", n, f.store.Count())
	}
	mu.Lock()
	want := []string{"alice sip:alice@192.0.2.1", "bob sip:bob@192.0.2.3", "alice sip:alice@192.0.2.2"}
	if !slices.Equal(expired, want) {
		t.Fatalf("expiry hook saw %v, want %v (in expiry order)", expired, want)
	}
	mu.Unlock()
	if len(f.store.aors) != 0 || len(f.store.heap) != 0 {
		t.Fatalf("leftovers: %d AORs, %d heap entries", len(f.store.aors), len(f.store.heap))
	}
}

func TestRunSweeps(t *testing.T) {
	done := make(chan []Binding, 1)
	f := newFixture(Config{}, WithExpiryHook(func(bs []Binding) { done <- bs }))
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "Expires: 60"), udpSrc), 200)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.store.Run(ctx, time.Millisecond)

	f.clock.Advance(61 * time.Second)
	select {
	case bs := <-done:
		if len(bs) != 1 || bs[0].AOR != "alice" {
			t.Fatalf("expired %+v", bs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not sweep the expired binding")
	}
	if n := f.store.Count(); n != 0 {
		t.Fatalf("count %d", n)
	}
}

func TestApplyDropsStaleBindingsOfItsAOR(t *testing.T) {
	var got []Binding
	f := newFixture(Config{MaxContacts: 1}, WithExpiryHook(func(bs []Binding) { got = append(got, bs...) }))
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, "Expires: 60"), udpSrc), 200)
	f.clock.Advance(61 * time.Second)
	// Not swept yet, but expired: it must not count against MaxContacts nor reach the update.
	mustStatus(t, f.do(t, msg(t, "c2", 1, phoneB), udpSrc), 200)
	if n := f.store.Count(); n != 1 || len(got) != 1 || got[0].Contact.Host != "192.168.1.10" {
		t.Fatalf("count %d, hook saw %v", n, uris(got))
	}
}

func TestDropConn(t *testing.T) {
	f := newFixture(Config{})
	tcp := func(conn string) Source {
		return Source{Addr: netip.MustParseAddrPort("203.0.113.9:50000"), Transport: "TCP", LocalAddr: "198.51.100.1:5060", ConnID: conn}
	}
	mustStatus(t, f.do(t, msg(t, "c1", 1, "Contact: <sip:alice@10.0.0.1;transport=tcp>, <sip:alice@10.0.0.2;transport=tcp>"), tcp("conn-1")), 200)
	mustStatus(t, f.do(t, msg(t, "c2", 1, "Contact: <sip:alice@10.0.0.3;transport=tcp>"), tcp("conn-2")), 200)
	mustStatus(t, f.do(t, msg(t, "c3", 1, phoneA), udpSrc), 200)
	mustStatus(t, f.reg.Register(msg(t, "c4", 1, "Contact: <sip:bob@10.0.0.4;transport=tcp>"), "bob", tcp("conn-1")), 200)

	if n := f.store.DropConn(""); n != 0 {
		t.Fatalf("DropConn(\"\") removed %d UDP bindings", n)
	}
	if n := f.store.DropConn("conn-1"); n != 3 {
		t.Fatalf("DropConn removed %d, want 3", n)
	}
	if got := uris(f.store.Lookup("alice")); len(got) != 2 || slices.Contains(got, "sip:alice@10.0.0.1;transport=tcp") {
		t.Fatalf("alice left with %v", got)
	}
	if len(f.store.Lookup("bob")) != 0 || f.store.Count() != 2 {
		t.Fatalf("bob still bound or count %d", f.store.Count())
	}
	if n := f.store.DropConn("conn-1"); n != 0 {
		t.Fatalf("second DropConn removed %d", n)
	}
	// A binding that moved to another connection leaves the old connection's index.
	mustStatus(t, f.do(t, msg(t, "c2", 2, "Contact: <sip:alice@10.0.0.3;transport=tcp>"), tcp("conn-3")), 200)
	if n := f.store.DropConn("conn-2"); n != 0 {
		t.Fatalf("old connection still owned %d", n)
	}
	if n := f.store.DropConn("conn-3"); n != 1 {
		t.Fatalf("new connection owned %d", n)
	}
	if len(f.store.conns) != 0 {
		t.Fatalf("connection index leaks %v", f.store.conns)
	}
}

func TestRemoveAndAll(t *testing.T) {
	f := newFixture(Config{})
	mustStatus(t, f.do(t, msg(t, "c1", 1, phoneA, phoneB), udpSrc), 200)
	mustStatus(t, f.reg.Register(msg(t, "c2", 1, "Contact: <sip:bob@192.0.2.3>"), "bob", udpSrc), 200)
	mustStatus(t, f.reg.Register(msg(t, "c3", 1, "Contact: <sip:carol@192.0.2.4>"), "Carol", udpSrc), 200)

	var aors []string
	for _, b := range f.store.All() {
		aors = append(aors, b.AOR)
	}
	if want := []string{"Carol", "alice", "alice", "bob"}; !slices.Equal(aors, want) {
		t.Fatalf("All AORs %v, want %v", aors, want)
	}
	if f.store.Remove("alice", "sip:alice@192.0.2.99") || f.store.Remove("nobody", "sip:x@y") {
		t.Fatal("removed something that is not there")
	}
	if !f.store.Remove("alice", "<sip:alice@192.168.1.11:5060;transport=TCP>") {
		t.Fatal("Remove by an equivalent URI failed")
	}
	if !f.store.Remove("bob", "sip:bob@192.0.2.3") || len(f.store.Lookup("bob")) != 0 {
		t.Fatal("Remove of bob failed")
	}
	if f.store.Count() != 2 {
		t.Fatalf("count %d", f.store.Count())
	}
	// AORs are case-sensitive.
	if len(f.store.Lookup("carol")) != 0 || len(f.store.Lookup("Carol")) != 1 {
		t.Fatal("AOR case folded")
	}
}

func TestStoreErrorLeavesAOR(t *testing.T) {
	s := NewMemoryStore(newClock().Now)
	boom := errors.New("boom")
	if _, err := s.Apply("alice", func(time.Time, []Binding) ([]Binding, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if s.Count() != 0 || len(s.aors) != 0 {
		t.Fatal("failed update created an AOR")
	}
}

func TestBindingRoundTrip(t *testing.T) {
	now := time.Unix(1_900_000_000, 123456789)
	var u gosip.Uri
	if err := gosip.ParseUri("sip:agent%2001@[2001:db8::5]:5062;transport=tls;ob;x=Y?subject=hi", &u); err != nil {
		t.Fatal(err)
	}
	in := Binding{
		AOR: "agent 01", Contact: u, Q: 0.333, Expires: now.Add(time.Hour), CallID: "abc@host", CSeq: 4294967295,
		Instance: "urn:uuid:1", RegID: 2147483647, Path: []string{"<sip:a;lr>", `"x, y" <sip:b;lr>`},
		Source: netip.MustParseAddrPort("[2001:db8::9%eth0]:5062"), Transport: "TLS", LocalAddr: "[2001:db8::1]:5061",
		ConnID: "tls-77", UserAgent: "Linphone/5.2", Registered: now,
	}
	r, err := encode(&in)
	if err != nil {
		t.Fatal(err)
	}
	out := r.binding("agent 01")
	if !out.Expires.Equal(in.Expires) || !out.Registered.Equal(in.Registered) {
		t.Fatalf("times %v %v", out.Expires, out.Registered)
	}
	out.Expires, out.Registered = in.Expires, in.Registered
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip\n got %+v\nwant %+v", out, in)
	}
	empty := Binding{Contact: gosip.Uri{Scheme: "sip", Host: "h"}}
	r, _ = encode(&empty)
	if b := r.binding(""); b.Path != nil || b.Instance != "" || b.UserAgent != "" || b.Source.IsValid() {
		t.Fatalf("empty binding decoded as %+v", b)
	}
}
