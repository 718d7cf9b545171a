package sip

import (
	"bytes"
	"log/slog"
	"net"
	"slices"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// A UDP destination is named at start when no UDP listener of its address family exists;
// TCP and TLS destinations, names (resolved per request) and covered families are not.
func TestUDPWithoutListener(t *testing.T) {
	d, err := dispatcher.New([]dispatcher.Spec{
		{SetID: 1, URI: "sip:10.0.0.1:5060"},
		{SetID: 1, URI: "sip:[2001:db8::1]:5060"},
		{SetID: 2, URI: "sip:[2001:db8::2]:5060;transport=tcp"},
		{SetID: 2, URI: "sip:fs.example.net:5060"},
		{SetID: 2, URI: "sip:[::ffff:10.0.0.3]:5060"},
	}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	v4only := map[bool]gosip.Addr{false: {Port: 5060}}
	if got, want := udpWithoutListener(d.Sets(), v4only), []string{"sip:[2001:db8::1]:5060"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 listener only: %v, want %v", got, want)
	}
	both := map[bool]gosip.Addr{false: {Port: 5060}, true: {Port: 5060}}
	if got := udpWithoutListener(d.Sets(), both); len(got) != 0 {
		t.Errorf("listeners in both families: %v, want none", got)
	}
	if got := udpWithoutListener(d.Sets(), map[bool]gosip.Addr{}); len(got) != 3 {
		t.Errorf("no UDP listener: %v, want the three UDP destinations with addresses", got)
	}
}

// A read that fills the buffer of a UDP socket sipgo opened itself may be a datagram the
// kernel cut short: it is dropped and counted. Reads from our own listeners come whole, and
// streams pass as read.
func TestWholeDatagram(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := &Router{log: slog.New(slog.DiscardHandler), m: newMetrics(reg)}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ours := newDatagramConn(pc, 65535)
	r.datagrams = []*datagramConn{ours}
	big := bytes.Repeat([]byte("x"), 30000)
	if _, err := pc.WriteTo(big, pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 4096) // what sipgo reads with
	n, _, err := ours.ReadFrom(small)
	if err != nil || n != len(small) {
		t.Fatalf("read from our listener: %d, %v", n, err)
	}
	got, err := r.wholeDatagram(gosip.TransportReadProps{Transport: "UDP", LocalAddr: ours.LocalAddr()}, small[:n])
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("our listener: %d bytes, %v; want the whole %d", len(got), err, len(big))
	}

	other := &net.UDPAddr{IP: net.IPv6loopback, Port: 5060}
	full := make([]byte, gosip.TransportBufferReadSize)
	if got, _ := r.wholeDatagram(gosip.TransportReadProps{Transport: "UDP", LocalAddr: other, RemoteAddr: other}, full); got != nil {
		t.Errorf("a full read on a socket sipgo opened passed (%d bytes)", len(got))
	}
	if got, _ := r.wholeDatagram(gosip.TransportReadProps{Transport: "UDP", LocalAddr: other, RemoteAddr: other}, full[:100]); len(got) != 100 {
		t.Errorf("a short read on a socket sipgo opened: %d bytes, want 100", len(got))
	}
	if got, _ := r.wholeDatagram(gosip.TransportReadProps{Transport: "TCP", LocalAddr: other, RemoteAddr: other}, full); len(got) != len(full) {
		t.Errorf("a full stream read: %d bytes, want %d", len(got), len(full))
	}
	if n := testutil.ToFloat64(r.m.rejected.WithLabelValues("truncated")); n != 1 {
		t.Errorf("truncated count %v, want 1", n)
	}
}

// Agent stream addresses wrap around after 2^24 - 1 and skip those still live.
func TestAgentAddressesWrap(t *testing.T) {
	a := newAgentRegistry()
	a.seq = 1<<24 - 2
	var got []string
	for _, u := range []string{"1001", "1002"} {
		_, key, err := a.add(u)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, key)
	}
	a.seq = 1<<24 - 2 // as if every other address had been used since
	_, key, err := a.add("1003")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, key)
	want := []string{"0.255.255.255:1", "0.0.0.1:1", "0.0.0.2:1"}
	if !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	if a.users["0.255.255.255:1"] != "1001" || a.users["0.0.0.1:1"] != "1002" || a.users["0.0.0.2:1"] != "1003" {
		t.Fatalf("registry %v", a.users)
	}
}
