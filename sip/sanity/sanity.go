// Package sanity is the first stage of the routing chain. It decides whether
// an inbound SIP message is well-formed enough to act on, so that malformed
// SIP is answered with an error status (or dropped when no answer can be
// formed) and is never forwarded.
//
// It has two layers because sipgo alone is not enough:
//
//   - sipgo's UDP transport logs and drops whatever its parser rejects, so the
//     sender never gets a 400 and keeps retransmitting; and the parser keeps
//     no raw header text, so some errors are invisible once it has run (a
//     display name that was not quoted, a Contact URI with headers that was
//     not in <>). Datagram works on the raw bytes before sipgo sees them and
//     NewPacketConn wires it into a UDP listener.
//   - sipgo's parser accepts much that RFC 3261 forbids (repeated single-value
//     headers, CSeq/Request-Line method mismatch, SIP/7.0, unknown URI
//     schemes, Max-Forwards 300, ...). Request and Response check what it
//     produced, on every transport.
package sanity

import (
	"bytes"
	"net"
	"strconv"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// Error says what is wrong with a message and which status answers it, so the
// router can build the response without parsing the text.
type Error struct {
	// Status is the response code for a request: 400, 416 or 505. It is 0 for
	// responses, which are never answered, only discarded.
	Status int
	// Reason is short enough for a reason phrase or a Warning header.
	Reason string
}

func (e *Error) Error() string { return e.Reason }

// Is makes every error of a class match the class's sentinel, so callers can
// write errors.Is(err, ErrUnsupportedScheme) without caring about the detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Classes of error. Compare with errors.Is; read the status with errors.As.
var (
	ErrBadRequest          = &Error{Status: 400, Reason: "Bad Request"}
	ErrUnsupportedScheme   = &Error{Status: 416, Reason: "Unsupported URI Scheme"}
	ErrVersionNotSupported = &Error{Status: 505, Reason: "Version Not Supported"}
	ErrMalformedResponse   = &Error{Status: 0, Reason: "Malformed response"}
)

func bad(reason string) error { return &Error{Status: 400, Reason: reason} }

// Request checks a request that sipgo's parser accepted (RFC 3261 §8.2,
// §16.3 step 1). A nil error does not mean the request will succeed: an
// unknown method, Max-Forwards 0 or an unsupported Require are answered later
// by the role that cares.
func Request(req *gosip.Request) error {
	if req == nil {
		return bad("No request")
	}
	// The version comes first: if it is not 2.0 nothing else can be judged.
	if err := version(req.SipVersion); err != nil {
		return err
	}
	if !isToken(string(req.Method)) {
		return bad("Malformed method")
	}
	if err := headers(req.Headers(), req.Body(), string(req.Method)); err != nil {
		return err
	}
	return requestURI(&req.Recipient)
}

// Response checks a response that sipgo's parser accepted. Any error means the
// response must be discarded silently (RFC 3261 §18.1.2, RFC 4475 §3.1.2.5):
// there is no one to answer.
func Response(res *gosip.Response) error {
	if res == nil {
		return &Error{Reason: "No response"}
	}
	if !strings.EqualFold(res.SipVersion, "SIP/2.0") {
		return &Error{Reason: "Unsupported SIP version"}
	}
	if res.StatusCode < 100 || res.StatusCode > 699 {
		return &Error{Reason: "Status code out of range"}
	}
	if err := headers(res.Headers(), res.Body(), ""); err != nil {
		return &Error{Reason: err.Error()}
	}
	return nil
}

func version(v string) error {
	if strings.EqualFold(v, "SIP/2.0") {
		return nil
	}
	if isVersion([]byte(v)) {
		return &Error{Status: 505, Reason: "Version Not Supported"}
	}
	return bad("Malformed SIP version")
}

func requestURI(u *gosip.Uri) error {
	switch u.Scheme {
	case "sip", "sips":
	case "tel":
		if u.Raw() == "" {
			return bad("Malformed Request-URI")
		}
		return nil
	default:
		return &Error{Status: 416, Reason: "Unsupported URI Scheme"}
	}
	if u.Wildcard || !isHost(u.Host) || u.Port < 0 || u.Port > 65535 {
		return bad("Malformed Request-URI")
	}
	// RFC 3261 §19.1.5: headers are not allowed in a Request-URI. RFC 4475
	// §3.1.2.11 lets an element ignore them instead, but an ignored header
	// that a later hop applies is exactly the danger, so reject.
	if len(u.Headers) > 0 {
		return bad("Headers in Request-URI")
	}
	return nil
}

// headers checks the header set of a request (method != "") or a response.
// sipgo keeps every header it saw, so counting them here is the only way to
// see a repeated single-value header: its accessors return the last one.
func headers(hs []gosip.Header, body []byte, method string) error {
	var nVia, nFrom, nTo, nCallID, nCSeq, nMaxFwd, nCL, nExpires int
	for _, h := range hs {
		var err error
		switch h := h.(type) {
		case *gosip.ViaHeader:
			err = via(h, nVia == 0 && method != "")
			nVia++
		case *gosip.FromHeader:
			nFrom++
			err = address(&h.Address, "From")
		case *gosip.ToHeader:
			nTo++
			err = address(&h.Address, "To")
		case *gosip.CallIDHeader:
			nCallID++
			if !isCallID(string(*h)) {
				err = bad("Malformed Call-ID")
			}
		case *gosip.CSeqHeader:
			nCSeq++
			// sipgo keeps extra LWS before the method and upper-cases the
			// Request-Line method (but not this one), so compare loosely;
			// Datagram compares the wire bytes exactly.
			m := strings.TrimSpace(string(h.MethodName))
			if !isToken(m) {
				err = bad("Malformed CSeq")
			} else if method != "" && !strings.EqualFold(m, method) {
				err = bad("CSeq method does not match Request-Line")
			}
		case *gosip.MaxForwardsHeader:
			nMaxFwd++
			if *h > 255 {
				err = bad("Max-Forwards out of range")
			}
		case *gosip.ContentLengthHeader:
			nCL++
			if int(*h) != len(body) {
				err = bad("Content-Length does not match body")
			}
		case *gosip.ContactHeader:
			if v, ok := h.Params.Get("expires"); ok && !isDelta(v) {
				err = bad("Malformed Contact expires")
			}
		default:
			switch name := h.Name(); {
			case strings.EqualFold(name, "Expires"):
				nExpires++
				if !isDelta(h.Value()) {
					err = bad("Malformed Expires")
				}
			case strings.EqualFold(name, "Retry-After"):
				if !isDelta(leadingDigits(h.Value())) {
					err = bad("Malformed Retry-After")
				}
			case strings.EqualFold(name, "Warning"):
				if !isWarnCode(h.Value()) {
					err = bad("Malformed Warning")
				}
			}
		}
		if err != nil {
			return err
		}
	}
	switch {
	case nVia == 0:
		return bad("Missing Via")
	case nFrom != 1:
		return missingOrRepeated(nFrom, "From")
	case nTo != 1:
		return missingOrRepeated(nTo, "To")
	case nCallID != 1:
		return missingOrRepeated(nCallID, "Call-ID")
	case nCSeq != 1:
		return missingOrRepeated(nCSeq, "CSeq")
	case nMaxFwd > 1:
		return bad("Repeated Max-Forwards")
	case nCL > 1:
		return bad("Repeated Content-Length")
	case nExpires > 1:
		return bad("Repeated Expires")
	}
	return nil
}

func missingOrRepeated(n int, name string) error {
	if n == 0 {
		return bad("Missing " + name)
	}
	return bad("Repeated " + name)
}

// via is strict only about the top Via, the one this element answers to and
// matches transactions on. sipgo mis-parses LWS after the second '/' (RFC
// 4475 wsinv): it yields an empty transport and a host holding the transport
// and spaces. Lower Vias are only carried, so they are held to what sipgo can
// represent.
func via(h *gosip.ViaHeader, top bool) error {
	if !strings.EqualFold(h.ProtocolName, "SIP") || h.ProtocolVersion != "2.0" {
		return bad("Malformed Via protocol")
	}
	if h.Host == "" || h.Port < 0 || h.Port > 65535 {
		return bad("Malformed Via sent-by")
	}
	if !top {
		return nil
	}
	if !isToken(h.Transport) || !isHost(h.Host) {
		return bad("Malformed Via sent-by")
	}
	// A missing branch is RFC 2543 (RFC 4475 inv2543 is valid); an empty one
	// is not a value at all; a bare magic cookie claims RFC 3261 matching
	// without a unique value to match on, so answer 400 rather than fall back
	// (RFC 4475 §3.2.1 allows either).
	if b, ok := h.Params.Get("branch"); ok {
		if b == "" {
			return bad("Empty Via branch")
		}
		if b == "z9hG4bK" {
			return bad("Via branch is a bare magic cookie")
		}
	}
	return nil
}

// address checks a From or To URI. Display names need no check here: sipgo
// refuses an unbalanced quote, and the other display-name errors (RFC 4475
// baddn) are only visible to Datagram.
func address(u *gosip.Uri, name string) error {
	switch u.Scheme {
	case "":
		return bad("Malformed " + name + " URI")
	case "sip", "sips":
		// sipgo keeps LWS that followed an addr-spec in the host (RFC 4475
		// wsinv), which is legal on the wire, so only inner LWS is an error.
		if !isHost(strings.TrimRight(u.Host, " \t")) {
			return bad("Malformed " + name + " URI")
		}
	}
	return nil
}

// isHost accepts hostnames, IPv4 and IPv6 (sipgo stores Via hosts without
// brackets and URI hosts with them). '_' is not legal in a hostname but is
// common enough on the wire that refusing it would only hurt.
func isHost(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '[' {
		if len(s) < 3 || s[len(s)-1] != ']' {
			return false
		}
		s = s[1 : len(s)-1]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '-' && c != ':' && c != '_' {
			return false
		}
	}
	return true
}

// isCallID follows RFC 3261 callid = word [ "@" word ]; '@' is allowed
// anywhere because insisting on one changes nothing a router cares about.
func isCallID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isWordChar(s[i]) && s[i] != '@' {
			return false
		}
	}
	return true
}

// isDelta reports whether s is delta-seconds: 1*DIGIT within 32 bits (RFC
// 3261 §20.19, §20.33; RFC 4475 scalar02 and scalarlg).
func isDelta(s string) bool {
	_, ok := number([]byte(s), 1<<32-1)
	return ok
}

func leadingDigits(s string) string {
	s = strings.TrimLeft(s, " \t")
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i]
}

// isWarnCode checks the first warning-value's code, 3DIGIT SP (RFC 3261
// §20.43).
func isWarnCode(s string) bool {
	s = strings.TrimLeft(s, " \t")
	return len(s) > 4 && isDigit(s[0]) && isDigit(s[1]) && isDigit(s[2]) && s[3] == ' '
}

// ---------------------------------------------------------------------------
// Datagram: the byte-level check in front of sipgo's UDP parser.

// Action is what to do with a datagram.
type Action uint8

const (
	// Drop is the zero value so that a Verdict nobody filled in fails closed.
	Drop   Action = iota // discard silently: not SIP, a response, a keep-alive, or nothing to answer to
	Accept               // hand to sipgo
	Reject               // send Verdict.Response to the datagram's source, then discard
)

// Verdict is the outcome of Datagram.
type Verdict struct {
	Action Action
	// Status is the status code of Response when Action is Reject.
	Status int
	// Reason says why the datagram was not accepted. It is empty for Accept and
	// for keep-alives, which are not errors.
	Reason string
	// Response is a complete response to the datagram when Action is Reject.
	Response []byte
}

func (v Verdict) String() string {
	switch v.Action {
	case Accept:
		return "accept"
	case Reject:
		return "reject " + strconv.Itoa(v.Status) + ": " + v.Reason
	}
	if v.Reason == "" {
		return "drop: keep-alive"
	}
	return "drop: " + v.Reason
}

// Datagram checks one UDP datagram before sipgo parses it; maxSize <= 0 means
// no limit beyond the datagram itself. It runs on every datagram, so the
// Accept path is a single pass over the header section that does not
// allocate; the body is never read.
//
// Each datagram is one message (RFC 3261 §18.3): bytes after Content-Length
// are ignored (RFC 4475 dblreq), a Content-Length larger than what arrived is
// an error (clerr), and without Content-Length the body is the rest of the
// datagram (inv2543).
//
// Lines must end in CRLF. A bare LF or CR in the start line or header section
// is an error, not something to tolerate: sipgo's parser splits lines on CRLF
// only, so it would silently drop such a message anyway. The reply builder
// does split on bare LF, so the sender still learns why.
//
// Besides framing it checks only what sipgo would either drop without an
// answer or cannot see once parsed: the start line, header-line shape,
// Content-Length, CSeq and Max-Forwards numbers, CSeq method against the
// Request-Line (exact case, which sipgo loses), and quoting, <> and commas in
// From, To and Contact. The rest is Request's and Response's job.
func Datagram(data []byte, maxSize int) Verdict {
	if isKeepAlive(data) {
		return Verdict{Action: Drop}
	}
	var d defect
	if maxSize > 0 && len(data) > maxSize {
		d = defect{513, "Message Too Large"} // RFC 3261 §21.5.14
	} else {
		d = inspect(data)
	}
	if d.status == 0 {
		return Verdict{Action: Accept}
	}
	resp := reply(data, d, nil)
	if resp == nil {
		return Verdict{Action: Drop, Reason: d.reason}
	}
	return Verdict{Action: Reject, Status: d.status, Reason: d.reason, Response: resp}
}

// isKeepAlive matches the CRLF keep-alives (RFC 5626 §3.5.1) that some UAs
// send over UDP too, and the all-NUL datagrams sipgo also skips. Neither is an
// error worth reporting.
func isKeepAlive(data []byte) bool {
	for _, c := range data {
		if c != '\r' && c != '\n' && c != 0 {
			return false
		}
	}
	return true
}

type defect struct {
	status int
	reason string
}

var (
	errStartLine  = defect{400, "Malformed Request-Line"}
	errStatusLine = defect{400, "Malformed Status-Line"}
	errNoCRLF     = defect{400, "Line not terminated by CRLF"}
	errBareCR     = defect{400, "Bare CR"}
)

// inspect returns the first defect of a datagram, or a zero defect.
func inspect(data []byte) defect {
	lf := bytes.IndexByte(data, '\n')
	switch {
	case lf < 0:
		return errStartLine
	case lf == 0 || data[lf-1] != '\r':
		return errNoCRLF
	case bytes.IndexByte(data[:lf-1], '\r') >= 0:
		return errBareCR
	}
	line := data[:lf-1]
	s := scanner{data: data}
	if hasPrefixFold(line, "SIP/") {
		if !isStatusLine(line) {
			return errStatusLine
		}
	} else {
		var d defect
		if s.method, d = requestLine(line); d.status == 400 || d.status == 505 {
			return d
		}
		// An unsupported scheme is only reported if the rest is well-formed,
		// as Request does: syntax errors take precedence.
		if d2 := s.headers(lf + 1); d2.status != 0 {
			return d2
		}
		return d
	}
	return s.headers(lf + 1)
}

// requestLine checks Method SP Request-URI SP SIP-Version (RFC 3261 §7.1).
// Splitting at the first and last SP makes every extra SP land in the URI
// (RFC 4475 lwsstart, trws, lwsruri), where it is an error.
func requestLine(line []byte) ([]byte, defect) {
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1+1 {
		return nil, errStartLine
	}
	method, uri, ver := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	for _, c := range method {
		if !isTokenChar(c) {
			return nil, errStartLine
		}
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return nil, errStartLine
		}
	}
	// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). sipgo only
	// takes letters, so "soap.beep" (RFC 4475 novelsc) would be dropped by
	// its parser instead of answered with 416.
	colon := bytes.IndexByte(uri, ':')
	if colon <= 0 || !isAlpha(uri[0]) {
		return nil, errStartLine
	}
	for _, c := range uri[1:colon] {
		if !isAlnum(c) && c != '+' && c != '-' && c != '.' {
			return nil, errStartLine
		}
	}
	if !eqFold(ver, "SIP/2.0") {
		if isVersion(ver) {
			return nil, defect{505, "Version Not Supported"}
		}
		return nil, errStartLine
	}
	if scheme := uri[:colon]; !eqFold(scheme, "sip") && !eqFold(scheme, "sips") && !eqFold(scheme, "tel") {
		return method, defect{416, "Unsupported URI Scheme"}
	}
	return method, defect{}
}

// isStatusLine checks SIP/2.0 SP 3DIGIT SP Reason-Phrase (RFC 3261 §7.2). The
// reason may be empty (RFC 4475 noreason) or UTF-8 (unreason).
func isStatusLine(line []byte) bool {
	return len(line) >= 12 && eqFold(line[:8], "SIP/2.0 ") &&
		line[8] >= '1' && line[8] <= '6' && isDigit(line[9]) && isDigit(line[10]) &&
		line[11] == ' '
}

// isVersion matches "SIP" "/" 1*DIGIT "." 1*DIGIT: a well-formed version that
// may merely be unsupported (505) rather than garbage (400).
func isVersion(v []byte) bool {
	if len(v) < 7 || !hasPrefixFold(v, "SIP/") {
		return false
	}
	v = v[4:]
	dot := bytes.IndexByte(v, '.')
	if dot <= 0 || dot == len(v)-1 {
		return false
	}
	for i, c := range v {
		if i != dot && !isDigit(c) {
			return false
		}
	}
	return true
}

type scanner struct {
	data   []byte
	method []byte // nil for responses
	nCL    int
	cl     uint64
}

type hkind uint8

const (
	hNone hkind = iota // before the first header line
	hOther
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
	hContentLength
	hMaxForwards
	hContact
)

// headers walks the header section from pos. Values may span folded lines;
// they are checked when the next header line starts, with CR and LF counted
// as LWS.
func (s *scanner) headers(pos int) defect {
	data := s.data
	kind := hNone
	var v0, v1 int
	for {
		start := pos
		nl := bytes.IndexByte(data[pos:], '\n')
		if nl < 0 {
			return defect{400, "Unterminated header section"}
		}
		end := pos + nl
		if nl == 0 || data[end-1] != '\r' {
			return errNoCRLF
		}
		line := data[pos : end-1]
		if bytes.IndexByte(line, '\r') >= 0 {
			return errBareCR
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if kind == hNone {
				return defect{400, "Folded line without header"}
			}
			v1 = end - 1
			pos = end + 1
			continue
		}
		if d := s.value(kind, data[v0:v1]); d.status != 0 {
			return d
		}
		pos = end + 1
		if len(line) == 0 {
			break
		}
		i := 0
		for i < len(line) && isTokenChar(line[i]) {
			i++
		}
		name := line[:i]
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if len(name) == 0 || i == len(line) || line[i] != ':' {
			return defect{400, "Malformed header line"}
		}
		kind = kindOf(name)
		v0, v1 = start+i+1, end-1
	}
	if s.nCL > 0 && s.cl > uint64(len(data)-pos) {
		return defect{400, "Content-Length exceeds datagram"}
	}
	return defect{}
}

func (s *scanner) value(k hkind, v []byte) defect {
	switch k {
	case hContentLength:
		n, ok := number(v, 1<<32-1)
		if !ok {
			return defect{400, "Malformed Content-Length"}
		}
		// Two lengths mean two framings (RFC 4475 mcl01); sipgo takes the last.
		if s.nCL++; s.nCL > 1 {
			return defect{400, "Repeated Content-Length"}
		}
		s.cl = n
	case hCSeq:
		m, ok := cseq(v)
		if !ok {
			return defect{400, "Malformed CSeq"}
		}
		if s.method != nil && !bytes.Equal(m, s.method) {
			return defect{400, "CSeq method does not match Request-Line"}
		}
	case hMaxForwards:
		if _, ok := number(v, 255); !ok {
			return defect{400, "Malformed Max-Forwards"}
		}
	case hCallID:
		if len(trimLWS(v)) == 0 {
			return defect{400, "Empty Call-ID"}
		}
	case hFrom:
		return nameAddr(v, false, "From")
	case hTo:
		return nameAddr(v, false, "To")
	case hContact:
		return nameAddr(v, true, "Contact")
	}
	return defect{}
}

// nameAddr checks the parts of From, To and Contact that sipgo either rejects
// without an answer or cannot report after parsing: quotes and <> balanced
// (RFC 4475 quotbal), no LWS inside <> (badaspec), no comma outside quotes in
// a single-value header, which is how an unquoted display name with a comma
// shows (baddn), and no '?' outside <>, which means URI headers in an
// addr-spec (regbadct; RFC 3261 §20.10).
func nameAddr(v []byte, list bool, name string) defect {
	if len(trimLWS(v)) == 0 {
		return defect{400, "Empty " + name}
	}
	inQ, inB, seen := false, false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isAlnum(c) {
			continue // most of the value, and never special
		}
		switch {
		case inQ:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQ = false
			}
		case inB:
			switch c {
			case '>':
				inB = false
			case '<', ' ', '\t', '\r', '\n':
				return defect{400, "Malformed " + name + " URI"}
			}
		default:
			switch c {
			case '"':
				inQ = true
			case '<':
				if seen {
					return defect{400, "Malformed " + name}
				}
				inB, seen = true, true
			case '>', '?':
				return defect{400, "Malformed " + name}
			case ',':
				if !list {
					return defect{400, "Comma in " + name}
				}
				seen = false
			}
		}
	}
	if inQ {
		return defect{400, "Unbalanced quotes in " + name}
	}
	if inB {
		return defect{400, "Malformed " + name}
	}
	return defect{}
}

// cseq splits 1*DIGIT LWS Method (RFC 3261 §20.16).
func cseq(v []byte) ([]byte, bool) {
	v = trimLWS(v)
	i := 0
	for i < len(v) && isDigit(v[i]) {
		i++
	}
	if _, ok := number(v[:i], 1<<32-1); !ok {
		return nil, false
	}
	m := trimLWS(v[i:])
	if len(m) == 0 || len(m) == len(v)-i {
		return nil, false
	}
	for _, c := range m {
		if !isTokenChar(c) {
			return nil, false
		}
	}
	return m, true
}

// number parses LWS 1*DIGIT LWS no larger than max. Leading zeros are legal
// (RFC 4475 wsinv has Max-Forwards 0068).
func number(v []byte, max uint64) (uint64, bool) {
	v = trimLWS(v)
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		if n = n*10 + uint64(c-'0'); n > max {
			return 0, false
		}
	}
	return n, true
}

func kindOf(name []byte) hkind {
	switch len(name) {
	case 1:
		switch name[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		case 'l':
			return hContentLength
		case 'm':
			return hContact
		}
	case 2:
		if eqFold(name, "to") {
			return hTo
		}
	case 3:
		if eqFold(name, "via") {
			return hVia
		}
	case 4:
		if eqFold(name, "from") {
			return hFrom
		}
		if eqFold(name, "cseq") {
			return hCSeq
		}
	case 7:
		if eqFold(name, "call-id") {
			return hCallID
		}
		if eqFold(name, "contact") {
			return hContact
		}
	case 12:
		if eqFold(name, "max-forwards") {
			return hMaxForwards
		}
	case 14:
		if eqFold(name, "content-length") {
			return hContentLength
		}
	}
	return hOther
}

// ---------------------------------------------------------------------------
// Building the answer. This is off the Accept path, so it may allocate.

type span struct{ start, end int } // a header field, folded lines included

// reply builds the response to a defective request datagram, or returns nil
// when there is nothing that may be answered: a response, an ACK (RFC 3261
// §17.2.1: never answered), or a request missing Via, From, To, Call-ID or
// CSeq, or having two of the single-value ones, since a client could not
// match what we sent.
//
// Via, From, To, Call-ID and CSeq are copied verbatim, line by line with CRLF
// endings, short forms included (RFC 3261 §8.2.6.2). Because that echoes the
// sender's bytes, the result is only returned if Datagram and sipgo's parser
// accept it: a defect inside an echoed header (RFC 4475 quotbal, badaspec,
// scalar02) means Drop, since a client could not parse the answer either.
// Response is deliberately not applied: it would refuse the 505 to SIP/7.0
// (badvers) for echoing the SIP/7.0 Via that the client will look for.
//
// The answer goes to an unauthenticated source address, so it must not be an
// amplifier: it is at most the echoed lines plus a status line, a tag and
// Content-Length, under 5/4 of the datagram plus 128 octets (FuzzInbound
// checks this).
func reply(data []byte, d defect, extra []string) []byte {
	first, pos := nextLine(data, 0)
	sp := bytes.IndexByte(first, ' ')
	if sp <= 0 || !isToken(string(first[:sp])) || string(first[:sp]) == "ACK" {
		return nil // a response, an ACK, or not recognisably a request
	}

	type field struct {
		kind hkind
		span
	}
	var fields []field
	folding := false // whether a continuation line extends the last field
	for pos < len(data) {
		start := pos
		var line []byte
		line, pos = nextLine(data, pos)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if folding {
				fields[len(fields)-1].end = start + len(line)
			}
			continue
		}
		folding = false
		if colon := bytes.IndexByte(line, ':'); colon > 0 {
			switch k := kindOf(bytes.TrimRight(line[:colon], " \t")); k {
			case hVia, hFrom, hTo, hCallID, hCSeq:
				fields = append(fields, field{k, span{start, start + len(line)}})
				folding = true
			}
		}
	}
	var vias []span
	var from, to, callID, cseqH span
	for _, f := range fields {
		var dst *span
		switch f.kind {
		case hVia:
			vias = append(vias, f.span)
			continue
		case hFrom:
			dst = &from
		case hTo:
			dst = &to
		case hCallID:
			dst = &callID
		case hCSeq:
			dst = &cseqH
		}
		if dst.end != 0 {
			return nil // repeated single-value header: which one to echo?
		}
		*dst = f.span
	}
	if len(vias) == 0 || from.end == 0 || to.end == 0 || callID.end == 0 || cseqH.end == 0 {
		return nil
	}
	if m, ok := cseq(afterColon(data[cseqH.start:cseqH.end])); !ok || string(m) == "ACK" {
		return nil
	}

	toField := trimRightLWS(data[to.start:to.end])
	size := 64 + len(d.reason) + len(toField) + from.end - from.start + extraLen(extra) +
		callID.end - callID.start + cseqH.end - cseqH.start
	for _, v := range vias {
		size += v.end - v.start + 2
	}
	buf := make([]byte, 0, size)
	buf = append(buf, "SIP/2.0 "...)
	buf = strconv.AppendInt(buf, int64(d.status), 10)
	buf = append(buf, ' ')
	buf = append(buf, d.reason...)
	buf = append(buf, "\r\n"...)
	for _, v := range vias {
		buf = appendField(buf, data[v.start:v.end])
	}
	buf = appendField(buf, data[from.start:from.end])
	buf = appendLines(buf, toField)
	if !hasTag(afterColon(toField)) {
		// RFC 3261 §8.2.6.2: add a To tag. A stateless answer must give a
		// retransmission the same tag, so derive it from the request.
		buf = append(buf, ";tag="...)
		buf = strconv.AppendUint(buf, tagHash(data, vias[0], from, callID, cseqH), 16)
	}
	buf = append(buf, "\r\n"...)
	buf = appendField(buf, data[callID.start:callID.end])
	buf = appendField(buf, data[cseqH.start:cseqH.end])
	for _, h := range extra {
		buf = append(buf, h...)
		buf = append(buf, "\r\n"...)
	}
	buf = append(buf, "Content-Length: 0\r\n\r\n"...)

	if inspect(buf).status != 0 {
		return nil
	}
	if msg, err := gosip.NewParser().ParseSIP(buf); err != nil {
		return nil
	} else if _, ok := msg.(*gosip.Response); !ok {
		return nil
	}
	return buf
}

func extraLen(extra []string) int {
	n := 0
	for _, h := range extra {
		n += len(h) + 2
	}
	return n
}

// Answer builds a stateless response to a request datagram without parsing it: the status line,
// its Via, From, To (with a tag derived from the request, so a retransmission gets the same
// one), Call-ID and CSeq, then the extra header lines given (without CRLF). It returns nil
// when no answer can be formed (a response, an ACK, missing or repeated headers). The router
// uses it to refuse new calls under overload before spending a parse and a transaction on them.
func Answer(data []byte, status int, reason string, extra ...string) []byte {
	return reply(data, defect{status, reason}, extra)
}

// InitialInvite reports whether a datagram is an INVITE that starts a dialog (its To has no
// tag), in one pass over the header lines and without allocating.
func InitialInvite(data []byte) bool {
	if !bytes.HasPrefix(data, []byte("INVITE ")) {
		return false
	}
	_, pos := nextLine(data, 0)
	for pos < len(data) {
		var line []byte
		line, pos = nextLine(data, pos)
		if len(line) == 0 {
			break
		}
		if colon := bytes.IndexByte(line, ':'); colon > 0 && kindOf(bytes.TrimRight(line[:colon], " \t")) == hTo {
			return !hasTag(afterColon(line))
		}
	}
	return false
}

// nextLine returns the line at pos without its terminator, tolerating a bare
// LF, and the position after it.
func nextLine(data []byte, pos int) ([]byte, int) {
	nl := bytes.IndexByte(data[pos:], '\n')
	if nl < 0 {
		return bytes.TrimSuffix(data[pos:], []byte("\r")), len(data)
	}
	return bytes.TrimSuffix(data[pos:pos+nl], []byte("\r")), pos + nl + 1
}

func afterColon(field []byte) []byte {
	return field[bytes.IndexByte(field, ':')+1:]
}

func appendField(buf, field []byte) []byte {
	return append(appendLines(buf, field), "\r\n"...)
}

// appendLines copies a possibly folded field, rewriting every line ending as
// CRLF, without a final CRLF.
func appendLines(buf, field []byte) []byte {
	for {
		nl := bytes.IndexByte(field, '\n')
		if nl < 0 {
			return append(buf, bytes.TrimSuffix(field, []byte("\r"))...)
		}
		buf = append(buf, bytes.TrimSuffix(field[:nl], []byte("\r"))...)
		buf = append(buf, "\r\n"...)
		field = field[nl+1:]
	}
}

// hasTag reports whether a To value has a tag parameter outside quotes and <>.
func hasTag(v []byte) bool {
	inQ, inB := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isAlnum(c) {
			continue // most of the value, and never special
		}
		switch {
		case inQ:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQ = false
			}
		case inB:
			inB = c != '>'
		case c == '"':
			inQ = true
		case c == '<':
			inB = true
		case c == ';':
			p := trimLWS(v[i+1:])
			if len(p) >= 3 && eqFold(p[:3], "tag") && len(trimLWS(p[3:])) > 0 && trimLWS(p[3:])[0] == '=' {
				return true
			}
		}
	}
	return false
}

// tagHash is FNV-1a over the fields that identify the request.
func tagHash(data []byte, spans ...span) uint64 {
	h := uint64(14695981039346656037)
	for _, s := range spans {
		for _, c := range data[s.start:s.end] {
			h = (h ^ uint64(c)) * 1099511628211
		}
	}
	return h
}

// ---------------------------------------------------------------------------
// PacketConn: Datagram in front of sipgo's UDP transport.

// NewPacketConn returns a PacketConn for sipgo's ServeUDP whose ReadFrom only
// returns datagrams that Datagram accepts. Rejected requests are answered from
// the same socket, so the answer leaves from the address the sender used.
// onReject, if not nil, is called with Verdict.String() for every datagram
// not returned except keep-alives; it runs on the read loop, so keep it quick.
func NewPacketConn(pc net.PacketConn, maxSize int, onReject func(src net.Addr, reason string)) net.PacketConn {
	return &packetConn{PacketConn: pc, maxSize: maxSize, onReject: onReject}
}

type packetConn struct {
	net.PacketConn
	maxSize  int
	onReject func(src net.Addr, reason string)
}

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		v := Datagram(b[:n], c.maxSize)
		if v.Action == Accept {
			return n, addr, nil
		}
		if v.Action == Reject {
			// Best effort, as for any UDP answer: a lost 400 only means the
			// client retransmits and gets another.
			_, _ = c.PacketConn.WriteTo(v.Response, addr)
		}
		if c.onReject != nil && v.Reason != "" {
			c.onReject(addr, v.String())
		}
	}
}

// ---------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1).

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

func isTokenChar(c byte) bool {
	if isAlnum(c) {
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func isWordChar(c byte) bool {
	if isTokenChar(c) {
		return true
	}
	switch c {
	case '(', ')', '<', '>', ':', '\\', '"', '/', '[', ']', '?', '{', '}':
		return true
	}
	return false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimLWS(v []byte) []byte {
	for len(v) > 0 && isLWS(v[0]) {
		v = v[1:]
	}
	return trimRightLWS(v)
}

func trimRightLWS(v []byte) []byte {
	for len(v) > 0 && isLWS(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	return v
}

// eqFold compares b with s, ignoring ASCII case.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && eqFold(b[:len(s)], s)
}

// UserAgent returns the User-Agent value of a request datagram (nil for responses or when
// absent), without parsing the message: the flood guard drops scanners before sipgo sees them.
func UserAgent(data []byte) []byte {
	if bytes.HasPrefix(data, []byte("SIP/")) {
		return nil
	}
	_, pos := nextLine(data, 0)
	for pos < len(data) {
		var line []byte
		line, pos = nextLine(data, pos)
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		if bytes.EqualFold(bytes.TrimRight(line[:colon], " \t"), []byte("User-Agent")) {
			return bytes.TrimSpace(line[colon+1:])
		}
	}
	return nil
}

// IsResponse reports whether a datagram is a SIP response (it starts with the version).
func IsResponse(data []byte) bool { return bytes.HasPrefix(data, []byte("SIP/")) }
