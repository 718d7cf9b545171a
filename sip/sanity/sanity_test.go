package sanity

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	gosip "github.com/emiago/sipgo/sip"
)

const torture = "../../testdata/sip-torture"

// Outcomes of the inbound pipeline, first stage that objects wins.
const (
	accept     = "accept"     // passed everything
	drop       = "drop"       // Datagram: discarded without an answer
	parseFail  = "parse"      // sipgo's parser refused it (UDP: logged and dropped, no answer)
	discard    = "discard"    // Response refused a response
	reject400  = "reject 400" // Datagram answered it
	reject416  = "reject 416"
	reject505  = "reject 505"
	request400 = "request 400" // Request refused it; the router answers
	request416 = "request 416"
	request505 = "request 505"
)

// pipeline runs what a UDP datagram goes through. With udp false it skips
// Datagram, which is what a message from a stream transport goes through.
func pipeline(data []byte, udp bool) (string, Verdict) {
	var v Verdict
	if udp {
		v = Datagram(data, 65535)
		switch v.Action {
		case Drop:
			return drop, v
		case Reject:
			return "reject " + strconv.Itoa(v.Status), v
		}
	}
	msg, err := gosip.NewParser().ParseSIP(data)
	if err != nil {
		return parseFail, v
	}
	switch m := msg.(type) {
	case *gosip.Request:
		if err := Request(m); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				return "request ?", v
			}
			return "request " + strconv.Itoa(e.Status), v
		}
	case *gosip.Response:
		if Response(m) != nil {
			return discard, v
		}
	}
	return accept, v
}

type expect struct {
	udp    string // Datagram, then sipgo, then Request/Response
	parsed string // sipgo, then Request/Response: the stream-transport path
	reason string // Verdict.Reason, or the error text where the udp outcome comes from Request/Response
}

// corpus is the decision for every file in MANIFEST.tsv.
var corpus = map[string]expect{
	// RFC 4475 §3.1.1, valid.
	"rfc4475/wsinv.dat":      {accept, accept, ""},
	"rfc4475/intmeth.dat":    {accept, accept, ""}, // unknown method: 501 is the UAS's business
	"rfc4475/esc01.dat":      {accept, accept, ""},
	"rfc4475/escnull.dat":    {accept, accept, ""},
	"rfc4475/esc02.dat":      {accept, accept, ""},
	"rfc4475/lwsdisp.dat":    {accept, accept, ""},
	"rfc4475/longreq.dat":    {accept, accept, ""},
	"rfc4475/dblreq.dat":     {accept, accept, ""}, // the trailing INVITE is ignored
	"rfc4475/semiuri.dat":    {accept, accept, ""},
	"rfc4475/transports.dat": {accept, accept, ""},
	"rfc4475/mpart01.dat":    {accept, accept, ""},
	"rfc4475/unreason.dat":   {accept, accept, ""},
	"rfc4475/noreason.dat":   {accept, accept, ""},

	// RFC 4475 §3.1.2, invalid.
	"rfc4475/badinv01.dat": {parseFail, parseFail, ""}, // sipgo refuses the Via; no 400 on UDP
	"rfc4475/clerr.dat":    {reject400, parseFail, "Content-Length exceeds datagram"},
	"rfc4475/ncl.dat":      {reject400, parseFail, "Malformed Content-Length"},
	// The defect is in a header a 400 must echo, so no answer can be formed.
	"rfc4475/scalar02.dat": {drop, parseFail, "Malformed CSeq"},
	"rfc4475/scalarlg.dat": {drop, parseFail, "Malformed CSeq"},
	"rfc4475/quotbal.dat":  {drop, parseFail, "Unbalanced quotes in To"},
	// May be tolerated (brackets dropped); we reject.
	"rfc4475/ltgtruri.dat": {reject400, parseFail, "Malformed Request-Line"},
	"rfc4475/lwsruri.dat":  {reject400, parseFail, "Malformed Request-Line"},
	// May be tolerated; we reject.
	"rfc4475/lwsstart.dat": {reject400, parseFail, "Malformed Request-Line"},
	"rfc4475/trws.dat":     {reject400, parseFail, "Malformed Request-Line"},
	// May be ignored; we reject, as a later hop might apply them.
	"rfc4475/escruri.dat": {request400, request400, "Headers in Request-URI"},
	// May be accepted when Date does not matter, and it does not to a proxy.
	"rfc4475/baddate.dat": {accept, accept, ""},
	// May be accepted; Datagram rejects it, but after sipgo has parsed it the
	// missing <> cannot be told from regescrt, so a stream transport accepts.
	"rfc4475/regbadct.dat": {reject400, accept, "Malformed Contact"},
	// May be accepted; we refuse. The broken To must be echoed, so no answer.
	"rfc4475/badaspec.dat": {drop, parseFail, "Malformed To URI"},
	// No empty line in this copy (see README); Datagram sees the comma first.
	"rfc4475/baddn.dat":      {drop, parseFail, "Comma in From"},
	"rfc4475/badvers.dat":    {reject505, request505, "Version Not Supported"},
	"rfc4475/mismatch01.dat": {reject400, request400, "CSeq method does not match Request-Line"},
	"rfc4475/mismatch02.dat": {reject400, request400, "CSeq method does not match Request-Line"},
	"rfc4475/bigcode.dat":    {drop, parseFail, "Malformed Status-Line"},

	// RFC 4475 §3.2 – §3.4.
	"rfc4475/badbranch.dat": {request400, request400, "Via branch is a bare magic cookie"},
	"rfc4475/insuf.dat":     {request400, request400, "Missing From"},
	"rfc4475/unkscm.dat":    {reject416, request416, "Unsupported URI Scheme"},
	// sipgo's URI parser takes only letters in a scheme, so without Datagram
	// this never reaches Request.
	"rfc4475/novelsc.dat":  {reject416, parseFail, "Unsupported URI Scheme"},
	"rfc4475/unksm2.dat":   {accept, accept, ""}, // a proxy routes it; 400 is for a registrar
	"rfc4475/bext01.dat":   {accept, accept, ""}, // 420 is for the UAS
	"rfc4475/invut.dat":    {accept, accept, ""}, // 415 is for the UAS
	"rfc4475/regaut01.dat": {accept, accept, ""},
	"rfc4475/multi01.dat":  {request400, request400, "Repeated From"},
	// Without Datagram sipgo frames by the last Content-Length.
	"rfc4475/mcl01.dat":    {reject400, request400, "Repeated Content-Length"},
	"rfc4475/bcast.dat":    {accept, accept, ""},
	"rfc4475/zeromf.dat":   {accept, accept, ""}, // 483 is the router's answer
	"rfc4475/cparam01.dat": {accept, accept, ""},
	"rfc4475/cparam02.dat": {accept, accept, ""},
	"rfc4475/regescrt.dat": {accept, accept, ""},
	"rfc4475/sdp01.dat":    {accept, accept, ""}, // 406 is for the UAS
	"rfc4475/inv2543.dat":  {accept, accept, ""},

	// RFC 5118.
	"rfc5118/ipv6-good.dat":                     {accept, accept, ""},
	"rfc5118/ipv6-bad.dat":                      {parseFail, parseFail, ""}, // sipgo reads "db8::10" as a port
	"rfc5118/port-ambiguous.dat":                {accept, accept, ""},
	"rfc5118/port-unambiguous.dat":              {accept, accept, ""},
	"rfc5118/via-received-param-with-delim.dat": {accept, accept, ""},
	"rfc5118/via-received-param-no-delim.dat":   {accept, accept, ""},
	"rfc5118/ipv6-in-sdp.dat":                   {accept, accept, ""}, // Content-Length fixed, see corpusFile
	"rfc5118/mult-ip-in-header.dat":             {accept, accept, ""},
	"rfc5118/mult-ip-in-sdp.dat":                {accept, accept, ""},
	"rfc5118/ipv4-mapped-ipv6.dat":              {accept, accept, ""},
	"rfc5118/ipv6-bug-abnf-3-colons.dat":        {accept, accept, ""},
	"rfc5118/ipv6-correct-abnf-2-colons.dat":    {accept, accept, ""},
}

// contentLengthFixed are the RFC 5118 files whose declared length is wrong.
// The README says to frame them by the datagram: the length is fixed in
// memory. TestCorpusDeclaredLength covers them as they are.
var contentLengthFixed = map[string]bool{
	"rfc5118/ipv6-in-sdp.dat":      true,
	"rfc5118/mult-ip-in-sdp.dat":   true,
	"rfc5118/ipv4-mapped-ipv6.dat": true,
}

type manifestRow struct{ file, section, expected, action string }

func manifest(t testing.TB) []manifestRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(torture, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []manifestRow
	for i, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		f := strings.Split(strings.TrimRight(line, "\r"), "\t")
		if len(f) != 4 {
			t.Fatalf("MANIFEST.tsv line %d: %d fields", i+1, len(f))
		}
		if i > 0 {
			rows = append(rows, manifestRow{f[0], f[1], f[2], f[3]})
		}
	}
	return rows
}

func corpusFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(torture, name))
	if err != nil {
		t.Fatal(err)
	}
	if contentLengthFixed[name] {
		data = fixContentLength(t, data)
	}
	return data
}

func fixContentLength(t testing.TB, data []byte) []byte {
	t.Helper()
	end := bytes.Index(data, []byte("\r\n\r\n"))
	head, body := string(data[:end+2]), data[end+4:]
	i := strings.Index(head, "\r\nContent-Length: ")
	if i < 0 {
		t.Fatal("no Content-Length to fix")
	}
	j := i + strings.Index(head[i+2:], "\r\n") + 2
	out := head[:i] + "\r\nContent-Length: " + strconv.Itoa(len(body)) + head[j:] + "\r\n"
	return append([]byte(out), body...)
}

func TestCorpus(t *testing.T) {
	rows := manifest(t)
	if len(rows) != len(corpus) {
		t.Errorf("manifest has %d rows, decision table %d", len(rows), len(corpus))
	}
	liberal := map[string]bool{"lwsstart": true, "trws": true, "baddate": true, "ltgtruri": true,
		"escruri": true, "regbadct": true, "badaspec": true, "baddn": true}
	for _, row := range rows {
		t.Run(row.file, func(t *testing.T) {
			want, ok := corpus[row.file]
			if !ok {
				t.Fatalf("no decision for %s (%s)", row.file, row.expected)
			}
			data := corpusFile(t, row.file)
			udp, v := pipeline(data, true)
			parsed, _ := pipeline(data, false)
			if udp != want.udp || parsed != want.parsed {
				t.Fatalf("got udp %q parsed %q, want %q %q (%s)", udp, parsed, want.udp, want.parsed, v)
			}
			if got := reasonOf(data, v); got != want.reason {
				t.Errorf("reason %q, want %q", got, want.reason)
			}

			// The table must agree with the manifest, so a careless edit
			// cannot turn an invalid message into an accepted one.
			base := strings.TrimSuffix(filepath.Base(row.file), ".dat")
			switch row.expected {
			case "valid":
				if udp != accept || parsed != accept {
					t.Errorf("valid message not accepted")
				}
			case "invalid":
				if (udp == accept || parsed == accept) && !liberal[base] {
					t.Errorf("invalid message accepted")
				}
			case "valid-but-semantic-error":
				if parsed == parseFail && base != "novelsc" {
					t.Errorf("sipgo must parse it")
				}
			default:
				t.Errorf("unknown expectation %q", row.expected)
			}

			if v.Action == Reject {
				checkReply(t, data, v)
			}
		})
	}
}

// reasonOf is the text a caller would log for the first objecting stage.
func reasonOf(data []byte, v Verdict) string {
	if v.Action != Accept {
		return v.Reason
	}
	msg, err := gosip.NewParser().ParseSIP(data)
	if err != nil {
		return ""
	}
	switch m := msg.(type) {
	case *gosip.Request:
		if err := Request(m); err != nil {
			return err.Error()
		}
	case *gosip.Response:
		if err := Response(m); err != nil {
			return err.Error()
		}
	}
	return ""
}

// checkReply asserts that a Reject answer is one a client can use: sipgo
// parses it, it carries the request's Via list, Call-ID and CSeq, and a To tag.
func checkReply(t *testing.T, req []byte, v Verdict) {
	t.Helper()
	msg, err := gosip.NewParser().ParseSIP(v.Response)
	if err != nil {
		t.Fatalf("reply does not parse: %v\n%s", err, v.Response)
	}
	res, ok := msg.(*gosip.Response)
	if !ok {
		t.Fatalf("reply is not a response:\n%s", v.Response)
	}
	if res.StatusCode != v.Status {
		t.Errorf("reply status %d, verdict %d", res.StatusCode, v.Status)
	}
	if got, want := res.CallID().Value(), rawHeader(req, "call-id", "i"); got != want {
		t.Errorf("reply Call-ID %q, request %q", got, want)
	}
	f := strings.Fields(rawHeader(req, "cseq", ""))
	if n, err := strconv.ParseUint(f[0], 10, 32); len(f) != 2 || err != nil ||
		uint64(res.CSeq().SeqNo) != n || string(res.CSeq().MethodName) != f[1] {
		t.Errorf("reply CSeq %q, request %q", res.CSeq().Value(), f)
	}
	if _, ok := res.To().Params.Get("tag"); !ok {
		t.Errorf("reply To has no tag: %s", res.To().Value())
	}
	if got, want := len(res.GetHeaders("Via")), countVias(req); got != want {
		t.Errorf("reply has %d Via values, request %d", got, want)
	}
	if Datagram(v.Response, 0).Action != Accept {
		t.Errorf("Datagram refuses its own reply")
	}
}

// rawHeader is a deliberately independent reading of the first value of a
// header: unfolded, trimmed.
func rawHeader(data []byte, long, short string) string {
	head, _, _ := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n")
	head = strings.ReplaceAll(strings.ReplaceAll(head, "\n ", " "), "\n\t", " ")
	for _, line := range strings.Split(head, "\n")[1:] {
		name, value, ok := strings.Cut(line, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if ok && (name == long || (short != "" && name == short)) {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

func countVias(data []byte) int {
	head, _, _ := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n")
	head = strings.ReplaceAll(strings.ReplaceAll(head, "\n ", " "), "\n\t", " ")
	n := 0
	for _, line := range strings.Split(head, "\n")[1:] {
		name, value, _ := strings.Cut(line, ":")
		if name = strings.ToLower(strings.TrimSpace(name)); name == "via" || name == "v" {
			n += strings.Count(value, ",") + 1
		}
	}
	return n
}

// TestCorpusDeclaredLength covers the RFC 5118 files as they are, that is as
// live UDP would see them. A length smaller than the datagram is how UDP
// frames (RFC 3261 §18.3): the rest is discarded. A larger one means the
// message did not all arrive, which is clerr's 400.
func TestCorpusDeclaredLength(t *testing.T) {
	for _, tc := range []struct {
		file    string
		outcome string
		body    int
	}{
		{"rfc5118/ipv6-in-sdp.dat", reject400, 0},     // declares 268, has 251
		{"rfc5118/mult-ip-in-sdp.dat", accept, 181},   // declares 181, has 189
		{"rfc5118/ipv4-mapped-ipv6.dat", accept, 236}, // declares 236, has 245
	} {
		data, err := os.ReadFile(filepath.Join(torture, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		got, v := pipeline(data, true)
		if got != tc.outcome {
			t.Errorf("%s: %s, want %s (%s)", tc.file, got, tc.outcome, v)
			continue
		}
		if v.Action == Reject {
			checkReply(t, data, v)
			continue
		}
		msg, _ := gosip.NewParser().ParseSIP(data)
		if n := len(msg.Body()); n != tc.body {
			t.Errorf("%s: body %d octets, want %d", tc.file, n, tc.body)
		}
	}
}

// TestBaddnTerminated gives baddn the empty line the README says it lacks, to
// show what happens to the defect the RFC section is about.
func TestBaddnTerminated(t *testing.T) {
	data := append(corpusFile(t, "rfc4475/baddn.dat"), "\r\n"...)
	if got, v := pipeline(data, true); got != drop || v.Reason != "Comma in From" {
		t.Errorf("udp: %s (%s)", got, v)
	}
	// sipgo keeps "Bell, Alexander" as the display name and drops the fact
	// that it was not quoted; only Datagram can see this.
	if got, _ := pipeline(data, false); got != accept {
		t.Errorf("parsed: %s", got)
	}
}

// ---------------------------------------------------------------------------

func msg(lines ...string) []byte { return []byte(strings.Join(lines, "\r\n")) }

// okLines is a well-formed OPTIONS; cases edit copies of it.
var okLines = []string{
	"OPTIONS sip:bob@example.com SIP/2.0",
	"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
	"Max-Forwards: 70",
	"To: <sip:bob@example.com>",
	"From: \"Alice\" <sip:alice@example.com>;tag=1928301774",
	"Call-ID: a84b4c76e66710@pc33.example.com",
	"CSeq: 314159 OPTIONS",
	"Content-Length: 0",
	"", "",
}

// with returns okLines with line i replaced (or removed when repl is "-").
func with(edits map[int]string) []byte {
	var out []string
	for i, l := range okLines {
		if r, ok := edits[i]; ok {
			if r == "-" {
				continue
			}
			l = r
		}
		out = append(out, l)
	}
	return msg(out...)
}

func TestDatagram(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		maxSize int
		action  Action
		status  int
		reason  string
	}{
		{"ok", with(nil), 0, Accept, 0, ""},
		{"keep-alive", []byte("\r\n\r\n"), 0, Drop, 0, ""},
		{"empty", nil, 0, Drop, 0, ""},
		{"NUL padding", make([]byte, 8), 0, Drop, 0, ""},
		{"STUN binding", []byte("\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl"), 0, Drop, 0, "Malformed Request-Line"},
		{"no SP in start line", []byte("HELLO\r\n\r\n"), 0, Drop, 0, "Malformed Request-Line"},
		{"leading CRLF", append([]byte("\r\n"), with(nil)...), 0, Drop, 0, "Malformed Request-Line"},
		{"bare LF", bytes.ReplaceAll(with(nil), []byte("\r\n"), []byte("\n")), 0, Reject, 400, "Line not terminated by CRLF"},
		{"bare LF in header", with(map[int]string{2: "Max-Forwards: 70\nSubject: x"}), 0, Reject, 400, "Line not terminated by CRLF"},
		{"bare CR in header", with(map[int]string{2: "Max-Forwards: 70\rSubject: x"}), 0, Reject, 400, "Bare CR"},
		{"fold after start line", with(map[int]string{1: " x\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"}), 0, Reject, 400, "Folded line without header"},
		{"no colon", with(map[int]string{2: "Max-Forwards 70"}), 0, Reject, 400, "Malformed header line"},
		{"space in name", with(map[int]string{2: "Max Forwards: 70"}), 0, Reject, 400, "Malformed header line"},
		{"no empty line", msg(okLines[:8]...), 0, Reject, 400, "Unterminated header section"},
		{"CL negative", with(map[int]string{7: "Content-Length: -1"}), 0, Reject, 400, "Malformed Content-Length"},
		{"CL 2^32", with(map[int]string{7: "Content-Length: 4294967296"}), 0, Reject, 400, "Malformed Content-Length"},
		{"CL exceeds", with(map[int]string{7: "l: 1"}), 0, Reject, 400, "Content-Length exceeds datagram"},
		{"CL short of datagram", with(map[int]string{9: "trailing octets"}), 0, Accept, 0, ""},
		{"no CL, body", with(map[int]string{7: "-", 9: "body"}), 0, Accept, 0, ""},
		{"CL twice, same", with(map[int]string{7: "Content-Length: 0\r\nl: 0"}), 0, Reject, 400, "Repeated Content-Length"},
		{"too large", with(nil), 100, Reject, 513, "Message Too Large"},
		{"exactly max", with(nil), len(with(nil)), Accept, 0, ""},
		{"Max-Forwards 0", with(map[int]string{2: "Max-Forwards: 0"}), 0, Accept, 0, ""},
		{"Max-Forwards 256", with(map[int]string{2: "Max-Forwards: 256"}), 0, Reject, 400, "Malformed Max-Forwards"},
		{"Max-Forwards x", with(map[int]string{2: "Max-Forwards: x"}), 0, Reject, 400, "Malformed Max-Forwards"},
		{"CSeq 2^32-1", with(map[int]string{6: "CSeq: 4294967295 OPTIONS"}), 0, Accept, 0, ""},
		{"CSeq 2^32", with(map[int]string{6: "CSeq: 4294967296 OPTIONS"}), 0, Drop, 0, "Malformed CSeq"},
		{"CSeq folded", with(map[int]string{6: "CSeq: 314159\r\n OPTIONS"}), 0, Accept, 0, ""},
		{"CSeq no method", with(map[int]string{6: "CSeq: 314159"}), 0, Drop, 0, "Malformed CSeq"},
		{"CSeq method case", with(map[int]string{6: "CSeq: 314159 options"}), 0, Reject, 400, "CSeq method does not match Request-Line"},
		{"SIP/3.0", with(map[int]string{0: "OPTIONS sip:bob@example.com SIP/3.0"}), 0, Reject, 505, "Version Not Supported"},
		{"sip/2.0", with(map[int]string{0: "OPTIONS sip:bob@example.com sip/2.0"}), 0, Accept, 0, ""},
		{"SIP/2.0x", with(map[int]string{0: "OPTIONS sip:bob@example.com SIP/2.0x"}), 0, Reject, 400, "Malformed Request-Line"},
		{"tel", with(map[int]string{0: "OPTIONS tel:+15551234 SIP/2.0"}), 0, Accept, 0, ""},
		{"SIPS", with(map[int]string{0: "OPTIONS SIPS:bob@example.com SIP/2.0"}), 0, Accept, 0, ""},
		{"im", with(map[int]string{0: "OPTIONS im:bob@example.com SIP/2.0"}), 0, Reject, 416, "Unsupported URI Scheme"},
		{"h323+x", with(map[int]string{0: "OPTIONS h323+x:bob SIP/2.0"}), 0, Reject, 416, "Unsupported URI Scheme"},
		{"416 after syntax", with(map[int]string{0: "OPTIONS im:bob SIP/2.0", 7: "l: 5"}), 0, Reject, 400, "Content-Length exceeds datagram"},
		{"URI in <>", with(map[int]string{0: "OPTIONS <sip:bob@example.com> SIP/2.0"}), 0, Reject, 400, "Malformed Request-Line"},
		{"UTF-8 in URI", with(map[int]string{0: "OPTIONS sip:b\xc3\xb6b@example.com SIP/2.0"}), 0, Reject, 400, "Malformed Request-Line"},
		{"method not token", with(map[int]string{0: "OPT/IONS sip:bob@example.com SIP/2.0"}), 0, Drop, 0, "Malformed Request-Line"},
		{"quoted comma in To", with(map[int]string{3: "To: \"Watson, Thomas\" <sip:bob@example.com>"}), 0, Accept, 0, ""},
		{"escaped quote in From", with(map[int]string{4: `From: "A \"B\" \\" <sip:a@example.com>;tag=1`}), 0, Accept, 0, ""},
		{"unbalanced To", with(map[int]string{3: "To: \"Bob <sip:bob@example.com>"}), 0, Drop, 0, "Unbalanced quotes in To"},
		{"comma in From", with(map[int]string{4: "From: Bell, A <sip:a@example.com>;tag=1"}), 0, Drop, 0, "Comma in From"},
		{"empty To", with(map[int]string{3: "To:  "}), 0, Drop, 0, "Empty To"},
		{"unbalanced Contact", with(map[int]string{2: "Contact: <sip:a@example.com"}), 0, Reject, 400, "Malformed Contact"},
		{"Contact list", with(map[int]string{2: "m: <sip:a@x>;q=0.1, \"B, C\" <sip:b@y>, sip:c@z;expires=3"}), 0, Accept, 0, ""},
		{"Contact star", with(map[int]string{2: "Contact: *"}), 0, Accept, 0, ""},
		{"Contact headers not in <>", with(map[int]string{2: "Contact: sip:a@x?Route=%3Csip:y%3E"}), 0, Reject, 400, "Malformed Contact"},
		{"Contact LWS in <>", with(map[int]string{2: "Contact: < sip:a@x>"}), 0, Reject, 400, "Malformed Contact URI"},
		{"empty Call-ID", with(map[int]string{5: "Call-ID:"}), 0, Drop, 0, "Empty Call-ID"},
		// Cases where an answer cannot be formed.
		{"ACK", with(map[int]string{0: "ACK sip:bob@example.com SIP/2.0", 6: "CSeq: 1 ACK", 7: "l: 9"}), 0, Drop, 0, "Content-Length exceeds datagram"},
		{"response", msg("SIP/2.0 200 OK", "Via: SIP/2.0/UDP h;branch=z9hG4bKx", "l: 9", "", ""), 0, Drop, 0, "Content-Length exceeds datagram"},
		{"no Call-ID", with(map[int]string{5: "-", 7: "l: 9"}), 0, Drop, 0, "Content-Length exceeds datagram"},
		{"no Via", with(map[int]string{1: "-", 7: "l: 9"}), 0, Drop, 0, "Content-Length exceeds datagram"},
		{"two From", with(map[int]string{2: "f: <sip:x@y>;tag=2", 7: "l: 9"}), 0, Drop, 0, "Content-Length exceeds datagram"},
		{"broken Via", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.15;;,;,,", 7: "l: 9"}), 0, Drop, 0, "Content-Length exceeds datagram"},
		// Responses.
		{"200", msg("SIP/2.0 200 OK", "", ""), 0, Accept, 0, ""},
		{"empty reason", msg("SIP/2.0 100 ", "", ""), 0, Accept, 0, ""},
		{"no reason SP", msg("SIP/2.0 100", "", ""), 0, Drop, 0, "Malformed Status-Line"},
		{"status 700", msg("SIP/2.0 700 X", "", ""), 0, Drop, 0, "Malformed Status-Line"},
		{"status 99", msg("SIP/2.0 99 X", "", ""), 0, Drop, 0, "Malformed Status-Line"},
		{"SIP/3.0 response", msg("SIP/3.0 200 OK", "", ""), 0, Drop, 0, "Malformed Status-Line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := Datagram(tc.data, tc.maxSize)
			if v.Action != tc.action || v.Status != tc.status || v.Reason != tc.reason {
				t.Fatalf("got %s (status %d), want action %d status %d %q", v, v.Status, tc.action, tc.status, tc.reason)
			}
			if v.Action == Reject {
				checkReply(t, tc.data, v)
				if !bytes.Equal(Datagram(tc.data, tc.maxSize).Response, v.Response) {
					t.Errorf("a retransmission gets a different answer")
				}
			} else if v.Response != nil {
				t.Errorf("Response set for %s", v)
			}
		})
	}
}

func TestDatagramReplyEchoesVerbatim(t *testing.T) {
	req := msg(
		"INVITE sip:bob@example.com SIP/2.0",
		"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,",
		"  SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
		"Subject: not echoed",
		"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3",
		"f: Alice <sip:alice@example.com>;tag=88",
		"t:",
		" <sip:bob@example.com>",
		"i: abc@d",
		"CSeq: 7 INVITE",
		"l: 10",
		"", "short",
	)
	v := Datagram(req, 0)
	if v.Action != Reject {
		t.Fatalf("got %s", v)
	}
	want := "SIP/2.0 400 Content-Length exceeds datagram\r\n" +
		"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n" +
		"  SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n" +
		"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n" +
		"f: Alice <sip:alice@example.com>;tag=88\r\n" +
		"t:\r\n <sip:bob@example.com>;tag="
	if !strings.HasPrefix(string(v.Response), want) {
		t.Fatalf("reply:\n%s\nwant prefix:\n%s", v.Response, want)
	}
	if !strings.HasSuffix(string(v.Response), "\r\ni: abc@d\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n") {
		t.Fatalf("reply:\n%s", v.Response)
	}
	checkReply(t, req, v)

	// A To tag that is already there is kept, not doubled.
	tagged := bytes.Replace(req, []byte(" <sip:bob@example.com>"), []byte(" <sip:bob@example.com> ; TAG = x1"), 1)
	v = Datagram(tagged, 0)
	if !bytes.Contains(v.Response, []byte("t:\r\n <sip:bob@example.com> ; TAG = x1\r\n")) {
		t.Fatalf("reply:\n%s", v.Response)
	}
}

func TestDatagramAcceptDoesNotAllocate(t *testing.T) {
	data := invite()
	if n := testing.AllocsPerRun(100, func() { Datagram(data, 65535) }); n != 0 {
		t.Errorf("%v allocations per Accept", n)
	}
}

// ---------------------------------------------------------------------------

func parseRequest(t *testing.T, data []byte) *gosip.Request {
	t.Helper()
	m, err := gosip.NewParser().ParseSIP(data)
	if err != nil {
		t.Fatalf("sipgo: %v\n%s", err, data)
	}
	return m.(*gosip.Request)
}

func TestRequest(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		class  error
		reason string
	}{
		{"ok", with(nil), nil, ""},
		{"lower-case method", with(map[int]string{0: "options sip:bob@example.com SIP/2.0", 6: "CSeq: 1 options"}), nil, ""},
		{"CSeq extra LWS", with(map[int]string{6: "CSeq: 1 \t OPTIONS"}), nil, ""},
		{"SIP/3.0", with(map[int]string{0: "OPTIONS sip:bob@example.com SIP/3.0"}), ErrVersionNotSupported, "Version Not Supported"},
		{"SIPPY", with(map[int]string{0: "OPTIONS sip:bob@example.com SIPPY"}), ErrBadRequest, "Malformed SIP version"},
		{"im", with(map[int]string{0: "OPTIONS im:bob@example.com SIP/2.0"}), ErrUnsupportedScheme, "Unsupported URI Scheme"},
		{"tel", with(map[int]string{0: "OPTIONS tel:+15551234 SIP/2.0"}), nil, ""},
		{"no host", with(map[int]string{0: "OPTIONS sip: SIP/2.0"}), ErrBadRequest, "Malformed Request-URI"},
		{"URI headers", with(map[int]string{0: "OPTIONS sip:bob@example.com?Subject=x SIP/2.0"}), ErrBadRequest, "Headers in Request-URI"},
		{"no Via", with(map[int]string{1: "-"}), ErrBadRequest, "Missing Via"},
		{"no From", with(map[int]string{4: "-"}), ErrBadRequest, "Missing From"},
		{"no To", with(map[int]string{3: "-"}), ErrBadRequest, "Missing To"},
		{"no Call-ID", with(map[int]string{5: "-"}), ErrBadRequest, "Missing Call-ID"},
		{"no CSeq", with(map[int]string{6: "-"}), ErrBadRequest, "Missing CSeq"},
		{"no Max-Forwards", with(map[int]string{2: "-"}), nil, ""},
		{"two To", with(map[int]string{2: "t: <sip:x@y>"}), ErrBadRequest, "Repeated To"},
		{"two Call-ID", with(map[int]string{2: "i: x"}), ErrBadRequest, "Repeated Call-ID"},
		{"two CSeq", with(map[int]string{2: "CSeq: 1 OPTIONS"}), ErrBadRequest, "Repeated CSeq"},
		{"two Max-Forwards", with(map[int]string{7: "Max-Forwards: 1"}), ErrBadRequest, "Repeated Max-Forwards"},
		{"CSeq mismatch", with(map[int]string{6: "CSeq: 1 INVITE"}), ErrBadRequest, "CSeq method does not match Request-Line"},
		{"Max-Forwards 0", with(map[int]string{2: "Max-Forwards: 0"}), nil, ""},
		{"Max-Forwards 256", with(map[int]string{2: "Max-Forwards: 256"}), ErrBadRequest, "Max-Forwards out of range"},
		{"Expires max", with(map[int]string{2: "Expires: 4294967295"}), nil, ""},
		{"Expires 2^32", with(map[int]string{2: "Expires: 4294967296"}), ErrBadRequest, "Malformed Expires"},
		{"Expires date", with(map[int]string{2: "Expires: Thu, 01 Dec 1994 16:00:00 GMT"}), ErrBadRequest, "Malformed Expires"},
		{"two Expires", with(map[int]string{2: "Expires: 1\r\nExpires: 2"}), ErrBadRequest, "Repeated Expires"},
		{"contact expires", with(map[int]string{2: "Contact: <sip:a@b>;expires=4294967296"}), ErrBadRequest, "Malformed Contact expires"},
		{"Retry-After", with(map[int]string{2: "Retry-After: 18000;duration=3600"}), nil, ""},
		{"Retry-After huge", with(map[int]string{2: "Retry-After: 949302838503028349304023988"}), ErrBadRequest, "Malformed Retry-After"},
		{"Warning", with(map[int]string{2: `Warning: 301 isi.edu "Incompatible"`}), nil, ""},
		{"Warning 4 digits", with(map[int]string{2: `Warning: 1812 overture "In Progress"`}), ErrBadRequest, "Malformed Warning"},
		{"no branch (RFC 2543)", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.1"}), nil, ""},
		{"empty branch", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.1;branch="}), ErrBadRequest, "Empty Via branch"},
		{"bare cookie", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK"}), ErrBadRequest, "Via branch is a bare magic cookie"},
		{"Via SIP/1.0", with(map[int]string{1: "Via: SIP/1.0/UDP 192.0.2.1;branch=z9hG4bKx"}), ErrBadRequest, "Malformed Via protocol"},
		{"Via bad port", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.1:99999;branch=z9hG4bKx"}), ErrBadRequest, "Malformed Via sent-by"},
		{"Via port not a number", with(map[int]string{1: "Via: SIP/2.0/UDP 192.0.2.1:x;branch=z9hG4bKx"}), ErrBadRequest, "Malformed Via sent-by"},
		{"Via IPv6", with(map[int]string{1: "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx"}), nil, ""},
		{"Call-ID with space", with(map[int]string{5: "Call-ID: a b"}), ErrBadRequest, "Malformed Call-ID"},
		{"From http", with(map[int]string{4: "From: <http://example.com>;tag=1"}), nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Request(parseRequest(t, tc.data))
			if tc.class == nil {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				return
			}
			if !errors.Is(err, tc.class) || err.Error() != tc.reason {
				t.Fatalf("got %v, want %v %q", err, tc.class, tc.reason)
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.class.(*Error).Status {
				t.Fatalf("status of %v", err)
			}
		})
	}
	if err := Request(nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("nil: %v", err)
	}
}

func TestResponse(t *testing.T) {
	ok := []string{
		"SIP/2.0 200 OK",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
		"To: <sip:bob@example.com>;tag=a6c85cf",
		"From: \"Alice\" <sip:alice@example.com>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33.example.com",
		"CSeq: 314159 OPTIONS",
		"Content-Length: 0",
		"", "",
	}
	edit := func(i int, s string) []byte {
		l := append([]string(nil), ok...)
		l[i] = s
		return msg(l...)
	}
	for _, tc := range []struct {
		name string
		data []byte
		bad  bool
	}{
		{"ok", msg(ok...), false},
		{"700", edit(0, "SIP/2.0 700 Nope"), true},
		{"SIP/3.0", edit(0, "SIP/3.0 200 OK"), true},
		{"no Via", edit(1, "Subject: x"), true},
		{"two Call-ID", edit(6, "i: x"), true},
		{"lower Via with bare cookie", edit(6, "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK"), false},
		{"Retry-After huge", edit(6, "Retry-After: 949302838503028349304023988"), true},
	} {
		m, err := gosip.NewParser().ParseSIP(tc.data)
		if err != nil {
			t.Fatalf("%s: sipgo: %v", tc.name, err)
		}
		err = Response(m.(*gosip.Response))
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !errors.Is(err, ErrMalformedResponse) {
			t.Errorf("%s: %v is not ErrMalformedResponse", tc.name, err)
		}
	}
	if Response(nil) == nil {
		t.Error("nil response accepted")
	}
}

// TestSipgoQuirks pins sipgo v1.7.2 behaviour this package works around or
// that the router must know about. If an upgrade changes one, revisit the
// comment that mentions it.
func TestSipgoQuirks(t *testing.T) {
	p := gosip.NewParser()
	// CSeq above 2^31-1 is refused although RFC 3261 §20.16 allows 32 bits.
	if _, err := p.ParseSIP(with(map[int]string{6: "CSeq: 2147483648 OPTIONS"})); err == nil {
		t.Error("sipgo now accepts CSeq 2^31")
	}
	// The Request-Line method is upper-cased; methods are case-sensitive.
	if r := parseRequest(t, with(map[int]string{0: "options sip:bob@example.com SIP/2.0"})); r.Method != "OPTIONS" {
		t.Errorf("sipgo keeps method case now: %q", r.Method)
	}
	// A scheme with a '.' (RFC 3986 allows it) is a parse error.
	if _, err := p.ParseSIP(with(map[int]string{0: "OPTIONS soap.beep://h SIP/2.0"})); err == nil {
		t.Error("sipgo now parses soap.beep:")
	}
	// LWS after the second '/' of a Via breaks it: wsinv's lower Vias come out
	// with an empty transport and re-serialise as invalid SIP.
	r := parseRequest(t, corpusFile(t, "rfc4475/wsinv.dat"))
	if vias := r.GetHeaders("Via"); len(vias) != 3 || vias[1].(*gosip.ViaHeader).Transport != "" {
		t.Errorf("sipgo now parses LWS in Via: %v", vias)
	}
	// A repeated single-value header is kept, and the accessor returns the
	// last one: only counting, as Request does, notices.
	r = parseRequest(t, with(map[int]string{7: "Call-ID: second"}))
	if r.CallID().Value() != "second" || len(r.GetHeaders("Call-ID")) != 2 {
		t.Errorf("Call-ID() = %q", r.CallID().Value())
	}
}

// ---------------------------------------------------------------------------

func TestPacketConn(t *testing.T) {
	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no UDP on loopback:", err)
	}
	defer server.Close()
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	var rejected []string
	pc := NewPacketConn(server, 4096, func(src net.Addr, reason string) {
		if src.String() != client.LocalAddr().String() {
			t.Errorf("onReject src %v", src)
		}
		rejected = append(rejected, reason)
	})
	if pc.LocalAddr().String() != server.LocalAddr().String() {
		t.Errorf("LocalAddr not delegated")
	}

	bad := corpusFile(t, "rfc4475/clerr.dat")
	good := with(nil)
	for _, d := range [][]byte{bad, []byte("\r\n\r\n"), good} {
		if _, err := client.WriteTo(d, server.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}

	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, src, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], good) || src.String() != client.LocalAddr().String() {
		t.Fatalf("ReadFrom returned %q from %v", buf[:n], src)
	}
	if len(rejected) != 1 || rejected[0] != "reject 400: Content-Length exceeds datagram" {
		t.Errorf("onReject calls: %q", rejected)
	}

	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := client.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if from.String() != server.LocalAddr().String() {
		t.Errorf("400 came from %v", from)
	}
	checkReply(t, bad, Verdict{Status: 400, Response: buf[:n]})

	// A read error (here the deadline) is returned, not swallowed.
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := pc.ReadFrom(buf); err == nil {
		t.Error("no timeout")
	}
}

// TestPacketConnWithSipgo checks the wiring the router will use: sipgo's UDP
// transport reads through the wrapper, so a malformed request is answered by
// the wrapper and never reaches a handler, and a good one does.
func TestPacketConnWithSipgo(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no UDP on loopback:", err)
	}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 4)
	srv.OnOptions(func(req *gosip.Request, tx gosip.ServerTransaction) {
		handled <- req.CallID().Value()
		_ = tx.Respond(gosip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = srv.ServeUDP(NewPacketConn(conn, 4096, nil)) }()
	defer conn.Close()

	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	exchange := func(req []byte) *gosip.Response {
		t.Helper()
		if _, err := client.WriteTo(req, conn.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := client.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		m, err := gosip.NewParser().ParseSIP(buf[:n])
		if err != nil {
			t.Fatalf("%v\n%s", err, buf[:n])
		}
		return m.(*gosip.Response)
	}

	if res := exchange(with(map[int]string{5: "Call-ID: bad", 7: "Content-Length: 9999"})); res.StatusCode != 400 {
		t.Errorf("malformed request got %d", res.StatusCode)
	}
	// sipgo answers a good request by its Via, so the Via must be the client.
	via := "Via: SIP/2.0/UDP " + client.LocalAddr().String() + ";branch=z9hG4bKgood;rport"
	if res := exchange(with(map[int]string{1: via})); res.StatusCode != 200 {
		t.Errorf("good request got %d", res.StatusCode)
	}
	if id := <-handled; id != "a84b4c76e66710@pc33.example.com" {
		t.Errorf("handler saw %q", id)
	}
	select {
	case id := <-handled:
		t.Errorf("handler also saw %q", id)
	default:
	}
}
