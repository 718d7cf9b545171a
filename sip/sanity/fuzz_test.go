package sanity

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

// FuzzInbound runs the whole inbound path. Nothing may panic, and an answer
// Datagram builds must be one a client can parse, that Datagram itself
// accepts, and that is not much bigger than what provoked it (it goes to an
// unauthenticated UDP source address).
func FuzzInbound(f *testing.F) {
	for _, row := range manifest(f) {
		raw, err := os.ReadFile(filepath.Join(torture, row.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		if contentLengthFixed[row.file] {
			f.Add(corpusFile(f, row.file))
		}
	}
	f.Add(invite())
	f.Add(with(map[int]string{7: "l: 9"}))
	f.Add(bytes.ReplaceAll(with(map[int]string{7: "l: 9"}), []byte("\r\n"), []byte("\n")))

	f.Fuzz(func(t *testing.T, data []byte) {
		v := Datagram(data, 4096)
		switch v.Action {
		case Reject:
			msg, err := gosip.NewParser().ParseSIP(v.Response)
			if err != nil {
				t.Fatalf("reply does not parse: %v\n%q", err, v.Response)
			}
			res, ok := msg.(*gosip.Response)
			if !ok || res.StatusCode != v.Status {
				t.Fatalf("reply is not a %d response: %q", v.Status, v.Response)
			}
			if Datagram(v.Response, 0).Action != Accept {
				t.Fatalf("Datagram refuses its own reply: %q", v.Response)
			}
			if len(v.Response) > len(data)*5/4+128 {
				t.Fatalf("reply of %d octets to %d", len(v.Response), len(data))
			}
			// Compare with sipgo's reading of the request only where both read
			// the same lines: sipgo does not split on a bare LF.
			if req, err := gosip.NewParser().ParseSIP(data); err == nil && crlfOnly(data) {
				if req.CallID() != nil && res.CallID().Value() != req.CallID().Value() {
					t.Fatalf("Call-ID %q, request %q", res.CallID().Value(), req.CallID().Value())
				}
				if req.CSeq() != nil && res.CSeq().Value() != req.CSeq().Value() {
					t.Fatalf("CSeq %q, request %q", res.CSeq().Value(), req.CSeq().Value())
				}
			}
		case Accept, Drop:
			if v.Response != nil {
				t.Fatalf("%s with a response", v)
			}
		default:
			t.Fatalf("action %d", v.Action)
		}
		// The stream-transport path sees everything, not only what Datagram
		// let through.
		if msg, err := gosip.NewParser().ParseSIP(data); err == nil {
			switch m := msg.(type) {
			case *gosip.Request:
				_ = Request(m)
			case *gosip.Response:
				_ = Response(m)
			}
		}
	})
}

// crlfOnly reports whether every CR and LF in the header section is part of a
// CRLF.
func crlfOnly(data []byte) bool {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	n := bytes.Count(head, []byte("\r\n"))
	return bytes.Count(head, []byte("\r")) == n && bytes.Count(head, []byte("\n")) == n
}
