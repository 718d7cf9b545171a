// Package registrar is dualgate's SIP registrar: the location service (which contacts each
// user is reachable at) and the processing of REGISTER requests that feed it.
//
// It follows RFC 3261 §10.3 for binding updates, RFC 3327 for Path, RFC 5626 for
// instance/reg-id keyed bindings, and records where each REGISTER really came from
// (RFC 3581 style source address, transport, listener and stream connection) so that the
// router can reach phones behind NAT over the flow they registered on.
//
// The package knows nothing of authentication or routing: the router authenticates the
// REGISTER, calls Registrar.Register, and sends the Result as the response. It uses
// Store.Lookup to route calls to registered users and Store.DropConn when a stream
// connection closes.
package registrar

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// Config bounds what a REGISTER may ask for. Zero fields take the defaults.
type Config struct {
	MinExpires     time.Duration // below it (and not zero) a contact gets 423; default 60s
	MaxExpires     time.Duration // longer requests are shortened to it; default 3600s
	DefaultExpires time.Duration // when neither ;expires nor Expires is given; default 3600s
	MaxContacts    int           // bindings per AOR; default 10
}

// Source is where a REGISTER really came from, as the transport saw it.
type Source struct {
	Addr      netip.AddrPort
	Transport string // UDP, TCP, TLS, WS, WSS (case-insensitive)
	LocalAddr string // our listener, host:port
	ConnID    string // stream connection identity, "" for UDP
}

// Result is what to answer a REGISTER with.
type Result struct {
	Status int
	Reason string
	// Headers for the response: on 200 a Contact per current binding with its remaining
	// ;expires, Path when echoed (RFC 3327), Require: outbound (RFC 5626) and Date; on 423
	// Min-Expires.
	Headers []gosip.Header
	// Bindings are the AOR's bindings after the request (nil unless Status is 200).
	Bindings []Binding
}

// Registrar applies REGISTER requests to a Store.
type Registrar struct {
	cfg     Config
	store   Store
	minS    uint32
	maxS    uint32
	defS    uint32
	metrics *metrics
}

// Option configures a Registrar.
type Option func(*Registrar)

// New returns a registrar writing to store. An inconsistent config is made consistent
// rather than refused: MaxExpires is raised to MinExpires and DefaultExpires is brought
// inside [MinExpires, MaxExpires].
func New(cfg Config, store Store, opts ...Option) *Registrar {
	if cfg.MinExpires <= 0 {
		cfg.MinExpires = 60 * time.Second
	}
	if cfg.MaxExpires <= 0 {
		cfg.MaxExpires = 3600 * time.Second
	}
	if cfg.DefaultExpires <= 0 {
		cfg.DefaultExpires = 3600 * time.Second
	}
	if cfg.MaxContacts <= 0 {
		cfg.MaxContacts = 10
	}
	cfg.MaxExpires = max(cfg.MaxExpires, cfg.MinExpires)
	cfg.DefaultExpires = min(max(cfg.DefaultExpires, cfg.MinExpires), cfg.MaxExpires)
	r := &Registrar{
		cfg:   cfg,
		store: store,
		minS:  seconds(cfg.MinExpires),
		maxS:  seconds(cfg.MaxExpires),
		defS:  seconds(cfg.DefaultExpires),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Config returns the configuration in effect, defaults filled in.
func (r *Registrar) Config() Config { return r.cfg }

// Store returns the location service the registrar writes to.
func (r *Registrar) Store() Store { return r.store }

// seconds rounds up, since SIP speaks whole seconds and a minimum must not shrink.
func seconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, math.MaxUint32))
}

// rejection is a refusal decided while computing an update; the store leaves the AOR as it
// was.
type rejection struct {
	status int
	reason string
	result string
}

func (e *rejection) Error() string { return strconv.Itoa(e.status) + " " + e.reason }

var (
	// RFC 3261 §10.3 step 7 says only that "the update MUST be aborted and the request
	// fails". 500 is what RFC 3261 §12.2.2 prescribes for the analogous out-of-order
	// request within a dialog; Kamailio answers 400 "Invalid CSeq number" here instead.
	errOutOfOrder = &rejection{500, "Out of Order CSeq", resultOutOfOrder}
	errTooMany    = &rejection{403, "Too Many Contacts", resultTooMany}
)

// malformedExpires is what RFC 3261 §20.10 and §20.19 say a malformed expiry means.
const malformedExpires = 3600

// want is one Contact of the request, validated.
type want struct {
	uri      gosip.Uri
	secs     uint32 // requested
	q        uint16
	instance string
	regID    int
}

func (w *want) outbound() bool { return w.instance != "" && w.regID > 0 }

// Register processes a REGISTER whose authentication the caller has already checked; aor
// is the authenticated user, whom the caller has matched against the To user.
func (r *Registrar) Register(req *gosip.Request, aor string, src Source) Result {
	res, label := r.register(req, aor, src)
	r.metrics.count(label)
	return res
}

func (r *Registrar) register(req *gosip.Request, aor string, src Source) (Result, string) {
	if aor == "" {
		return fail(404, "Not Found"), resultBadRequest // RFC 3261 §10.3 step 3
	}
	callIDH, cseqH := req.CallID(), req.CSeq()
	if callIDH == nil || cseqH == nil {
		return fail(400, "Missing Call-ID or CSeq"), resultBadRequest
	}
	callID, cseq := string(*callIDH), cseqH.SeqNo

	var contacts []*gosip.ContactHeader
	for _, h := range req.Headers() {
		if c, ok := h.(*gosip.ContactHeader); ok {
			contacts = append(contacts, c)
		}
	}
	hdrSecs, hasHdr := r.defS, false
	if h := req.GetHeader("Expires"); h != nil {
		hasHdr = true
		if s, ok := parseDelta(h.Value()); ok {
			hdrSecs = s
		} else {
			hdrSecs = malformedExpires
		}
	}

	if len(contacts) == 0 {
		bs := r.store.Lookup(aor)
		return r.ok(bs, r.store.Now(), nil), resultQuery
	}

	if slices.ContainsFunc(contacts, func(c *gosip.ContactHeader) bool { return c.Address.Wildcard }) {
		if len(contacts) != 1 || !hasHdr || hdrSecs != 0 {
			return fail(400, "Invalid Wildcard Contact"), resultBadRequest
		}
		return r.apply(aor, func(_ time.Time, cur []Binding) ([]Binding, error) {
			for i := range cur {
				if cur[i].CallID == callID && cseq <= cur[i].CSeq {
					return nil, errOutOfOrder
				}
			}
			return nil, nil
		}, nil)
	}

	wants := make([]want, len(contacts))
	for i, c := range contacts {
		w, reason := r.parseContact(c, hdrSecs)
		if reason != "" {
			return fail(400, reason), resultBadRequest
		}
		wants[i] = w
	}

	// RFC 5626 §6: one REGISTER registers one flow.
	nonzero, regNonzero, anyReg := 0, false, false
	for i := range wants {
		if wants[i].secs != 0 {
			nonzero++
			regNonzero = regNonzero || wants[i].regID > 0
		}
		anyReg = anyReg || wants[i].regID > 0
	}
	if regNonzero && nonzero > 1 {
		return fail(400, "Multiple Contacts with reg-id"), resultBadRequest
	}
	paths := headerValues(req, "Path")
	if anyReg && !outboundApplies(req, paths) {
		if supports(req, "outbound") {
			return fail(439, "First Hop Lacks Outbound Support"), resultFirstHop
		}
		for i := range wants {
			wants[i].regID = 0
		}
	}

	for i := range wants {
		if wants[i].secs != 0 && wants[i].secs < r.minS {
			res := fail(423, "Interval Too Brief")
			res.Headers = []gosip.Header{gosip.NewHeader("Min-Expires", strconv.FormatUint(uint64(r.minS), 10))}
			return res, resultTooBrief
		}
		wants[i].secs = min(wants[i].secs, r.maxS)
	}

	ua := ""
	if h := req.GetHeader("User-Agent"); h != nil {
		ua = h.Value()
	}
	transport := strings.ToUpper(src.Transport)
	maxContacts := r.cfg.MaxContacts
	update := func(now time.Time, cur []Binding) ([]Binding, error) {
		// cur is ours to reuse; stored marks the entries still as the store had them.
		work := slices.Grow(cur, len(wants))
		stored := make([]bool, len(cur), len(cur)+len(wants))
		for i := range stored {
			stored[i] = true
		}
		for k := range wants {
			w := &wants[k]
			i := w.match(work)
			// RFC 3261 §10.3 step 7.
			if i >= 0 && stored[i] && work[i].CallID == callID && cseq <= work[i].CSeq {
				return nil, errOutOfOrder
			}
			if w.secs == 0 {
				if i >= 0 {
					work = slices.Delete(work, i, i+1)
					stored = slices.Delete(stored, i, i+1)
				}
				continue
			}
			// Written in place: a Binding temporary (over 400 bytes) on this goroutine's
			// stack is what used to push the REGISTER path past its initial stack.
			if i < 0 {
				work = slices.Grow(work, 1)
				work, stored = work[:len(work)+1], append(stored, false)
				i = len(work) - 1
			}
			stored[i] = false
			nb := &work[i]
			*nb = Binding{}
			nb.Contact = w.uri
			nb.Q = float64(w.q) / 1000
			nb.Expires = now.Add(time.Duration(w.secs) * time.Second)
			nb.CallID = callID
			nb.CSeq = cseq
			nb.Instance = w.instance
			nb.RegID = w.regID
			nb.Path = paths
			nb.Source = src.Addr
			nb.Transport = transport
			nb.LocalAddr = src.LocalAddr
			nb.ConnID = src.ConnID
			nb.UserAgent = ua
			nb.Registered = now
		}
		// Only growth is refused, so bindings above a lowered limit can still be refreshed
		// and removed.
		if len(work) > maxContacts && len(work) > len(cur) {
			return nil, errTooMany
		}
		return work, nil
	}

	var extra []gosip.Header
	if len(paths) > 0 && supports(req, "path") {
		extra = append(extra, gosip.NewHeader("Path", strings.Join(paths, ", ")))
	}
	if supports(req, "outbound") && slices.ContainsFunc(wants, func(w want) bool { return w.regID > 0 && w.secs > 0 }) {
		extra = append(extra, gosip.NewHeader("Require", "outbound"))
	}
	return r.apply(aor, update, extra)
}

// parseContact validates one Contact and works out the expiry it asks for: its own
// ;expires, else the Expires header, else the default.
func (r *Registrar) parseContact(c *gosip.ContactHeader, hdrSecs uint32) (want, string) {
	w := want{uri: c.Address, secs: hdrSecs, q: 1000}
	// Only SIP URIs can be routed to; a tel: or mailto: binding would be dead weight.
	scheme := strings.ToLower(w.uri.Scheme)
	if (scheme != "sip" && scheme != "sips") || w.uri.Host == "" {
		return w, "Unsupported Contact URI"
	}
	if v, ok := param(c.Params, "expires"); ok {
		if s, ok := parseDelta(v); ok {
			w.secs = s
		} else {
			w.secs = malformedExpires
		}
	}
	if v, ok := param(c.Params, "q"); ok {
		q, ok := parseQ(v)
		if !ok {
			return w, "Invalid q-value"
		}
		w.q = q
	}
	if v, ok := param(c.Params, "+sip.instance"); ok {
		if w.instance = instanceID(v); w.instance == "" {
			return w, "Invalid +sip.instance"
		}
	}
	if v, ok := param(c.Params, "reg-id"); ok {
		id, ok := parseRegID(v)
		if !ok {
			return w, "Invalid reg-id"
		}
		// RFC 5626 §6: without an instance the reg-id is ignored.
		if w.instance != "" {
			w.regID = id
		}
	}
	return w, ""
}

// sameFlow and sameURI say whether the Contact updates binding b. An outbound Contact
// (instance and reg-id, RFC 5626) is the stored flow with that instance and reg-id whatever
// its URI, which is what lets a phone whose NAT mapping changed replace its old binding;
// failing that it takes over a plain binding with an equal URI rather than duplicate it.
// Two flows of one device may share a URI, so an outbound Contact never takes over another
// flow by URI. A plain Contact matches by URI (RFC 3261 §10.3 step 7).
func (w *want) sameFlow(b *Binding) bool {
	return b.Outbound() && b.RegID == w.regID && strings.EqualFold(b.Instance, w.instance)
}

func (w *want) sameURI(b *Binding) bool {
	if w.outbound() && b.Outbound() {
		return false
	}
	return sameContact(&b.Contact, &w.uri)
}

// match is the index of the binding in work the Contact updates, -1 if none: by flow first
// for an outbound Contact, then by URI. Plain loops over pointers, not slices.IndexFunc,
// which would copy every Binding onto the stack to pass it by value.
func (w *want) match(work []Binding) int {
	if w.outbound() {
		for j := range work {
			if w.sameFlow(&work[j]) {
				return j
			}
		}
	}
	for j := range work {
		if w.sameURI(&work[j]) {
			return j
		}
	}
	return -1
}

// outboundApplies reports whether RFC 5626 outbound processing applies: either we are the
// first hop (a single Via) or the first Path URI carries ;ob, i.e. the edge proxy keeps the
// flow (RFC 5626 §6).
func outboundApplies(req *gosip.Request, paths []string) bool {
	if len(req.GetHeaders("Via")) <= 1 {
		return true
	}
	if len(paths) == 0 {
		return false
	}
	u, ok := pathURI(paths[0])
	if !ok {
		return false
	}
	_, ob := param(u.UriParams, "ob")
	return ob
}

func (r *Registrar) apply(aor string, update Update, extra []gosip.Header) (Result, string) {
	var at time.Time
	bs, err := r.store.Apply(aor, func(now time.Time, cur []Binding) ([]Binding, error) {
		at = now
		return update(now, cur)
	})
	if err != nil {
		if rej, ok := errors.AsType[*rejection](err); ok {
			return fail(rej.status, rej.reason), rej.result
		}
		return fail(500, "Server Internal Error"), resultStoreError
	}
	return r.ok(bs, at, extra), resultOK
}

// ok builds the 200: every current binding with the seconds it has left, rounded up so a
// live binding never reads as expires=0 (which would tell the phone it was removed).
func (r *Registrar) ok(bs []Binding, now time.Time, extra []gosip.Header) Result {
	hs := make([]gosip.Header, 0, len(bs)+len(extra)+1)
	for i := range bs {
		hs = append(hs, contactHeader(&bs[i], now))
	}
	hs = append(hs, extra...)
	hs = append(hs, gosip.NewHeader("Date", now.UTC().Format(sipDate)))
	return Result{Status: 200, Reason: "OK", Headers: hs, Bindings: bs}
}

// sipDate is RFC 3261's SIP-date, the RFC 1123 date in GMT.
const sipDate = "Mon, 02 Jan 2006 15:04:05 GMT"

func contactHeader(b *Binding, now time.Time) *gosip.ContactHeader {
	left := b.Expires.Sub(now)
	secs := max(int64((left+time.Second-1)/time.Second), 1)
	params := make(gosip.HeaderParams, 0, 4)
	params = append(params, gosip.HeaderKV{K: "expires", V: strconv.FormatInt(secs, 10)})
	if b.Q != 1 {
		params = append(params, gosip.HeaderKV{K: "q", V: strconv.FormatFloat(b.Q, 'f', -1, 64)})
	}
	// RFC 5626 UAs find their own binding in the 200 by instance and reg-id.
	if b.Instance != "" {
		params = append(params, gosip.HeaderKV{K: "+sip.instance", V: `"<` + b.Instance + `>"`})
	}
	if b.RegID > 0 {
		params = append(params, gosip.HeaderKV{K: "reg-id", V: strconv.Itoa(b.RegID)})
	}
	return &gosip.ContactHeader{Address: b.Contact, Params: params}
}

func fail(status int, reason string) Result { return Result{Status: status, Reason: reason} }
