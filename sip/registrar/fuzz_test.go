package registrar

import (
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

// FuzzRegister feeds arbitrary Contact, Expires and Path values through a registrar and
// checks that it answers without panicking and stores only what its 200 lists.
func FuzzRegister(f *testing.F) {
	for _, seed := range [][3]string{
		{"<sip:a@192.0.2.1>;expires=60;q=0.5", "120", "<sip:p;lr>"},
		{"*", "0", ""},
		{`<sip:a@h;ob>;reg-id=1;+sip.instance="<urn:uuid:1>"`, "", `"x,y" <sip:p;lr;ob>`},
		{"<sip:a@[2001:db8::1]:5060;transport=tcp>;expires=0", "abc", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, contact, expires, path string) {
		if strings.ContainsAny(contact+expires+path, "\r\n") {
			t.Skip()
		}
		raw := "REGISTER sip:d SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\nFrom: <sip:a@d>;tag=1\r\n" +
			"To: <sip:a@d>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: " + contact + "\r\n"
		if expires != "" {
			raw += "Expires: " + expires + "\r\n"
		}
		if path != "" {
			raw += "Path: " + path + "\r\nSupported: path\r\n"
		}
		m, err := gosip.ParseMessage([]byte(raw + "Content-Length: 0\r\n\r\n"))
		if err != nil {
			t.Skip()
		}
		fx := newFixture(Config{})
		res := fx.do(t, m.(*gosip.Request), udpSrc)
		if res.Status == 200 && len(res.Bindings) != fx.store.Count() {
			t.Fatalf("200 lists %d bindings, store holds %d", len(res.Bindings), fx.store.Count())
		}
		if res.Status != 200 && fx.store.Count() != 0 {
			t.Fatalf("%d stored after %d", fx.store.Count(), res.Status)
		}
	})
}
