package registrar

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unique"

	gosip "github.com/emiago/sipgo/sip"
)

// Binding is one registered contact of an AOR.
type Binding struct {
	AOR        string    // user part of the address-of-record, case-sensitive as SIP users are
	Contact    gosip.Uri // as registered, with its URI parameters (;transport=, ;ob, ...)
	Q          float64   // 0..1, 1.0 when the Contact had no q
	Expires    time.Time
	CallID     string
	CSeq       uint32
	Instance   string   // RFC 5626 instance-id without quotes and angle brackets ("urn:uuid:..."), "" if none
	RegID      int      // RFC 5626 reg-id, 0 if none or if outbound did not apply
	Path       []string // Path header values in order (RFC 3327): the route set towards the contact
	Source     netip.AddrPort
	Transport  string // transport the REGISTER came over: UDP, TCP, TLS, WS, WSS
	LocalAddr  string // our listener it came in on (host:port)
	ConnID     string // the stream connection it arrived on, "" for UDP
	UserAgent  string
	Registered time.Time // when a REGISTER last wrote this binding
}

// Outbound reports whether the binding is keyed by instance and reg-id (RFC 5626) rather
// than by its Contact URI.
func (b *Binding) Outbound() bool { return b.Instance != "" && b.RegID > 0 }

// record is a Binding as the memory store keeps it. At 100k+ agents the location service is
// one of the larger heaps in the process, so the variable-length strings share one
// allocation, repeated strings (User-Agent, listener, transport) are interned, and the
// contact is kept as text and parsed again when read: reads are per call, not per packet.
type record struct {
	blob       string    // contact | callID | instance | connID | path (", "-joined)
	off        [4]uint32 // end of each of the first four segments of blob
	source     netip.AddrPort
	ua         unique.Handle[string]
	local      unique.Handle[string]
	transport  unique.Handle[string]
	expires    int64 // unix nanoseconds
	registered int64
	cseq       uint32
	regID      int32
	q          uint16 // thousandths
}

var errContact = errors.New("registrar: contact does not survive a round trip through text")

func intern(s string) unique.Handle[string] { return unique.Make(s) }

func encode(b *Binding) (record, error) {
	contact := b.Contact.String()
	// Refuse now rather than lose the binding on a later read.
	var probe gosip.Uri
	if gosip.ParseUri(contact, &probe) != nil {
		return record{}, errContact
	}
	path := strings.Join(b.Path, ", ")
	var sb strings.Builder
	sb.Grow(len(contact) + len(b.CallID) + len(b.Instance) + len(b.ConnID) + len(path))
	var r record
	for i, s := range [...]string{contact, b.CallID, b.Instance, b.ConnID} {
		sb.WriteString(s)
		r.off[i] = uint32(sb.Len())
	}
	sb.WriteString(path)
	r.blob = sb.String()
	r.source = b.Source
	r.ua = intern(b.UserAgent)
	r.local = intern(b.LocalAddr)
	r.transport = intern(b.Transport)
	r.expires = b.Expires.UnixNano()
	r.registered = b.Registered.UnixNano()
	r.cseq = b.CSeq
	r.regID = int32(b.RegID)
	r.q = uint16(b.Q*1000 + 0.5)
	return r, nil
}

func (r *record) contact() string  { return r.blob[:r.off[0]] }
func (r *record) callID() string   { return r.blob[r.off[0]:r.off[1]] }
func (r *record) instance() string { return r.blob[r.off[1]:r.off[2]] }
func (r *record) connID() string   { return r.blob[r.off[2]:r.off[3]] }
func (r *record) path() string     { return r.blob[r.off[3]:] }

func (r *record) binding(aor string) Binding {
	var b Binding
	r.decode(&b, aor)
	return b
}

// decode fills *b, which must be zero. It writes in place rather than returning a Binding:
// a Binding is over 400 bytes, and the REGISTER path runs on a fresh goroutine per request
// (sipgo), where every large temporary on the stack brings the copy of a grown stack closer.
func (r *record) decode(b *Binding, aor string) {
	b.AOR = aor
	b.Q = float64(r.q) / 1000
	b.Expires = time.Unix(0, r.expires)
	b.CallID = r.callID()
	b.CSeq = r.cseq
	b.Instance = r.instance()
	b.RegID = int(r.regID)
	b.Source = r.source
	b.Transport = r.transport.Value()
	b.LocalAddr = r.local.Value()
	b.ConnID = r.connID()
	b.UserAgent = r.ua.Value()
	b.Registered = time.Unix(0, r.registered)
	_ = gosip.ParseUri(r.contact(), &b.Contact) // checked by encode
	if p := r.path(); p != "" {
		b.Path = splitList(p)
	}
}

// appendDecoded appends the decoded record to bs without a Binding temporary.
func appendDecoded(bs []Binding, r *record, aor string) []Binding {
	bs = slices.Grow(bs, 1)
	bs = bs[:len(bs)+1]
	b := &bs[len(bs)-1]
	*b = Binding{}
	r.decode(b, aor)
	return bs
}

// byPreference is the order Lookup promises: q descending, then the most recently
// registered first, so a caller forking sequentially tries the freshest device first.
func byPreference(a, b Binding) int {
	if c := cmp.Compare(b.Q, a.Q); c != 0 {
		return c
	}
	return b.Registered.Compare(a.Registered)
}

func recordByPreference(a, b record) int {
	if c := cmp.Compare(b.q, a.q); c != 0 {
		return c
	}
	return cmp.Compare(b.registered, a.registered)
}

func sortBindings(bs []Binding) { slices.SortStableFunc(bs, byPreference) }

// uriParamsStrict are the URI parameters that RFC 3261 §19.1.4 compares even when only one
// of the two URIs carries them.
var uriParamsStrict = [...]string{"transport", "user", "ttl", "method", "maddr"}

// sameContact compares Contact URIs as RFC 3261 §19.1.4 does, except that URI headers are
// ignored: scheme and host case-insensitively, user and password exactly, an absent port
// differs from an explicit 5060, and parameters present in both must agree.
func sameContact(a, b *gosip.Uri) bool {
	if !strings.EqualFold(a.Scheme, b.Scheme) {
		return false
	}
	if a.Raw() != "" || b.Raw() != "" {
		return a.Raw() == b.Raw()
	}
	if a.User != b.User || a.Password != b.Password || a.Port != b.Port || !strings.EqualFold(a.Host, b.Host) {
		return false
	}
	for _, k := range uriParamsStrict {
		av, aok := param(a.UriParams, k)
		bv, bok := param(b.UriParams, k)
		if aok != bok || !strings.EqualFold(av, bv) {
			return false
		}
	}
	for _, kv := range a.UriParams {
		if bv, ok := param(b.UriParams, kv.K); ok && !strings.EqualFold(kv.V, bv) {
			return false
		}
	}
	return true
}

// param looks a parameter up case-insensitively: sipgo keeps names as received and
// RFC 3261 parameter names are case-insensitive.
func param(hp gosip.HeaderParams, key string) (string, bool) {
	for _, kv := range hp {
		if strings.EqualFold(kv.K, key) {
			return kv.V, true
		}
	}
	return "", false
}
