package registrar

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// msg builds a REGISTER from wire text: the mandatory headers plus lines.
func msg(t testing.TB, callID string, cseq int, lines ...string) *gosip.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString("REGISTER sip:dualgate.example SIP/2.0\r\n")
	hasVia := false
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "via:") {
			hasVia = true
		}
	}
	if !hasVia {
		b.WriteString("Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK" + fmt.Sprint(cseq) + ";rport\r\n")
	}
	b.WriteString("Max-Forwards: 70\r\n")
	b.WriteString("From: <sip:alice@dualgate.example>;tag=f1\r\n")
	b.WriteString("To: <sip:alice@dualgate.example>\r\n")
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", callID, cseq)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	m, err := gosip.ParseMessage([]byte(b.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b.String())
	}
	return m.(*gosip.Request)
}

var udpSrc = Source{Addr: netip.MustParseAddrPort("203.0.113.7:40001"), Transport: "udp", LocalAddr: "198.51.100.1:5060"}

type fixture struct {
	clock *fakeClock
	store *MemoryStore
	reg   *Registrar
}

func newFixture(cfg Config, opts ...MemoryOption) *fixture {
	c := newClock()
	s := NewMemoryStore(c.Now, opts...)
	return &fixture{clock: c, store: s, reg: New(cfg, s)}
}

func (f *fixture) do(t testing.TB, req *gosip.Request, src Source) Result {
	t.Helper()
	return f.reg.Register(req, "alice", src)
}

func mustStatus(t testing.TB, res Result, want int) {
	t.Helper()
	if res.Status != want {
		t.Fatalf("status %d %q, want %d", res.Status, res.Reason, want)
	}
}

// contacts maps each Contact URI of a response to its expires parameter.
func contacts(t testing.TB, res Result) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range res.Headers {
		if c, ok := h.(*gosip.ContactHeader); ok {
			exp, _ := c.Params.Get("expires")
			out[c.Address.String()] = exp
		}
	}
	return out
}

func header(res Result, name string) (string, bool) {
	for _, h := range res.Headers {
		if strings.EqualFold(h.Name(), name) {
			return h.Value(), true
		}
	}
	return "", false
}

func uris(bs []Binding) []string {
	out := make([]string, len(bs))
	for i := range bs {
		out[i] = bs[i].Contact.String()
	}
	return out
}
