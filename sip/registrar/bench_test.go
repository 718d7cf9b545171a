package registrar

import (
	"net/netip"
	"runtime"
	"strconv"
	"testing"
)

const benchContact = "Contact: <sip:agent@192.168.1.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:8f0c1d4e-2a6b-4c3d-9e1f-0a1b2c3d4e5f>\""

// BenchmarkRegister is one refresh of an existing binding, the steady-state work of a
// registrar: a parsed REGISTER in, a 200 with its Contact out.
func BenchmarkRegister(b *testing.B) {
	f := newFixture(Config{})
	req := msg(b, "9f8e7d6c5b4a39281706@192.168.1.10", 1, benchContact, "Expires: 3600", "User-Agent: Yealink SIP-T46U 108.86.0.20")
	aors := make([]string, 1000)
	for i := range aors {
		aors[i] = "agent" + strconv.Itoa(i)
	}
	cseq := req.CSeq()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		cseq.SeqNo = uint32(i + 1) // each refresh is newer than the stored one
		if res := f.reg.Register(req, aors[i%len(aors)], udpSrc); res.Status != 200 {
			b.Fatalf("status %d %s", res.Status, res.Reason)
		}
	}
}

// BenchmarkRegisterGoroutine is BenchmarkRegister with each REGISTER on a goroutine of its
// own, as sipgo runs every request: a new goroutine starts on a small stack, and every large
// temporary on the REGISTER path (a Binding is over 400 bytes) brings a stack copy closer.
// Compare its ns/op with BenchmarkRegister's.
func BenchmarkRegisterGoroutine(b *testing.B) {
	f := newFixture(Config{})
	req := msg(b, "9f8e7d6c5b4a39281706@192.168.1.10", 1, benchContact, "Expires: 3600", "User-Agent: Yealink SIP-T46U 108.86.0.20")
	aors := make([]string, 1000)
	for i := range aors {
		aors[i] = "agent" + strconv.Itoa(i)
	}
	cseq := req.CSeq()
	done := make(chan int, 1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		cseq.SeqNo = uint32(i + 1)
		go func(aor string) { done <- f.reg.Register(req, aor, udpSrc).Status }(aors[i%len(aors)])
		if st := <-done; st != 200 {
			b.Fatalf("status %d", st)
		}
	}
}

// BenchmarkLookup is the per-call read: the bindings of one AOR.
func BenchmarkLookup(b *testing.B) {
	f := newFixture(Config{})
	req := msg(b, "9f8e7d6c5b4a39281706@192.168.1.10", 1, benchContact, "User-Agent: Yealink SIP-T46U 108.86.0.20")
	f.reg.Register(req, "agent", udpSrc)
	b.ReportAllocs()
	for b.Loop() {
		if len(f.store.Lookup("agent")) != 1 {
			b.Fatal("no binding")
		}
	}
}

// BenchmarkMemoryPerBinding measures the heap a binding costs once stored: 100,000
// distinct AORs with one typical binding each (a phone behind NAT on UDP).
func BenchmarkMemoryPerBinding(b *testing.B) {
	const n = 100_000
	req := msg(b, "9f8e7d6c5b4a39281706@192.168.1.10", 1, benchContact, "Expires: 3600", "User-Agent: Yealink SIP-T46U 108.86.0.20")
	var perBinding float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f := newFixture(Config{})
		for i := range n {
			src := udpSrc
			src.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), uint16(1024+i%60000))
			if res := f.reg.Register(req, "agent"+strconv.Itoa(i), src); res.Status != 200 {
				b.Fatalf("status %d", res.Status)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if f.store.Count() != n {
			b.Fatalf("count %d", f.store.Count())
		}
		perBinding = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(f)
	}
	b.ReportMetric(perBinding, "bytes/binding")
}
