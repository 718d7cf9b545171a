// Package auth is the server side of SIP digest authentication (RFC 3261 §22 with
// RFC 2617 qop=auth, RFC 7616/RFC 8760 SHA-256): it builds challenges for 401/407
// responses and verifies Authorization / Proxy-Authorization credentials.
//
// # Nonces
//
// Nonces are stateless: a nonce is base64url(issued || random || tag), where issued is the
// issue time in Unix nanoseconds (8 bytes), random is 8 bytes from crypto/rand and tag is
// HMAC-SHA256 over issued || random || prefix, truncated to 16 bytes. prefix is the address
// the challenge was sent to, as the guard counts sources (the IPv4 address, the IPv6 /64); it
// is not in the nonce but taken from the answering request's source, so a nonce is good only
// from where it was sent. The HMAC key is derived from Config.Secret and the realm, so a
// nonce issued for one realm is worthless in another even when the secret is shared. Because the tag authenticates the issue time, a nonce cannot be
// forged or have its lifetime extended, and nothing has to be stored when a challenge is sent:
// a flood of unauthenticated requests costs one HMAC each and no memory. Instances behind one
// address must share Secret; with the default per-process random secret, a restart turns every
// outstanding nonce into Unproven (one extra round trip per client).
//
// # Replay protection
//
// A stateless nonce can be replayed until it expires, so the one piece of state is the highest
// nonce-count (nc) accepted per nonce. It is written only after a response has been proven
// correct, so only clients that know a password can make it grow, and it is bounded: entries
// expire with their nonce and a hard cap (Config.MaxNonces) evicts the oldest. A nonce whose
// entry was evicted while still valid is answered Stale, never accepted again, so memory
// pressure cannot open a replay window. The table is per process: instances sharing a
// Secret each accept a given nc once, so keep a client on one instance. This is also why qop=auth is mandatory: RFC 2069
// responses carry no nc and could be replayed freely within the nonce lifetime.
//
// # Outcomes
//
// Unproven (challenge again, not counted): a nonce that is not ours for the request's source,
// whether forged, issued by another secret or realm, or sent to another address. Over UDP the
// source address can be spoofed, so a failure counts toward bans only once the sender has
// shown it received our challenge at that address; otherwise anyone could get a phone's
// address banned, or fill a user's failure count, with packets they never see answered. The
// nonce is checked before anything else that could fail, so no policy refusal on an unproven
// nonce counts either.
//
// Malformed (answer 400, not counted toward bans, since it is not a password guess): a value
// over 4 KiB, more than 16 values, bad syntax, a duplicated parameter (refused rather than
// first- or last-wins, so no two readers of the header disagree), or a parameter RFC 3261
// requires missing: realm, username, nonce, uri, response, and cnonce and nc once qop is
// present. Failed (challenge again, counted): everything well-formed but wrong on a nonce we
// sent to that source, including policy refusals a client could legally send: no qop, qop
// other than auth, an algorithm we did not offer (the -sess variants among them), userhash.
//
// Retransmissions: an identical Authorization is a replay by construction. Call Verify from a
// transaction-stateful handler (sipgo absorbs retransmissions before the handler runs), and do
// not authenticate ACK or CANCEL (RFC 3261 §22.1).
package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Credentials looks up password hashes.
type Credentials interface {
	// HA1 returns lower-case hex HA1 = H(user:realm:password) for algorithm "MD5" or
	// "SHA-256"; false if unknown user or no hash for that algorithm. It is called for every
	// response that passes the nonce check, known user or not, and should take about as long
	// either way (a map lookup does), or its timing tells which users exist.
	HA1(user, algorithm string) (string, bool)
}

// Config configures an Authenticator. The zero value of every field but Realm has a default.
type Config struct {
	Realm string
	// Algorithms offered, in order; default ["SHA-256", "MD5"]. RFC 8760 wants one challenge
	// per algorithm, strongest first. Only MD5 and SHA-256 exist here: the -sess variants are
	// refused because no client we serve uses them and they add a second per-session secret
	// for no gain when HA1 is already stored hashed.
	Algorithms []string
	// NonceTTL is how long a nonce is good for; default 5m. A correct response on an older
	// nonce is answered Stale, so the client retries silently with a fresh one.
	NonceTTL time.Duration
	// Secret keys the nonce HMAC; at least 16 bytes. Nil means random per process.
	Secret []byte
	// MaxNonces caps the nonce-count table; default 100000 (about 10 MB at worst). It is
	// split evenly over 64 shards, so it is rounded up to a multiple of 64.
	MaxNonces int
}

const (
	defaultTTL       = 5 * time.Minute
	defaultMaxNonces = 100_000
	// maxValueLen bounds one header value; real credentials are a few hundred octets.
	maxValueLen = 4096
	// maxHeaders bounds the work one request can ask for.
	maxHeaders = 16
	// maxFutureSkew tolerates a wall clock stepped back after a nonce was issued.
	maxFutureSkew = time.Minute
)

// Validate reports whether New would accept c.
func (c Config) Validate() error {
	_, err := c.normalize()
	return err
}

func (c Config) normalize() (Config, error) {
	if c.Realm == "" {
		return c, errors.New("auth: empty realm")
	}
	for i := 0; i < len(c.Realm); i++ {
		if b := c.Realm[i]; b < 0x20 || b == 0x7f {
			return c, errors.New("auth: control character in realm")
		}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{algSHA256.name, algMD5.name}
	}
	algs := make([]string, 0, len(c.Algorithms))
	for _, name := range c.Algorithms {
		al := lookupAlgorithm(name)
		if al == nil {
			return c, fmt.Errorf("auth: unsupported algorithm %q (MD5 and SHA-256 only)", name)
		}
		for _, prev := range algs {
			if prev == al.name {
				return c, fmt.Errorf("auth: algorithm %s listed twice", al.name)
			}
		}
		algs = append(algs, al.name)
	}
	c.Algorithms = algs
	switch {
	case c.NonceTTL < 0:
		return c, errors.New("auth: negative nonce TTL")
	case c.NonceTTL == 0:
		c.NonceTTL = defaultTTL
	}
	if c.Secret != nil && len(c.Secret) < 16 {
		return c, errors.New("auth: secret shorter than 16 bytes")
	}
	switch {
	case c.MaxNonces < 0:
		return c, errors.New("auth: negative nonce cap")
	case c.MaxNonces == 0:
		c.MaxNonces = defaultMaxNonces
	}
	return c, nil
}

// Status is the outcome of Verify. The zero value is Missing, so a forgotten Result never
// reads as success.
type Status uint8

const (
	// Missing: no Digest credentials for our realm; answer with a plain challenge.
	Missing Status = iota
	// OK: authenticated as Result.User.
	OK
	// Stale: right password on an expired nonce; challenge again with stale=true.
	Stale
	// Failed: on a nonce we sent to this source, a wrong password, unknown user, replayed
	// nonce-count, unsupported algorithm or qop. Challenge again, and count it toward bans.
	Failed
	// Malformed: credentials for us (or of unknown realm) that cannot be parsed, or lack a
	// parameter RFC 3261 requires; answer 400.
	Malformed
	// Unproven: the nonce is not one we sent to this source's prefix (forged, or issued to
	// another address). Nothing shows the sender ever saw our challenge, and over UDP the
	// source may be spoofed: challenge again, and do NOT count it toward any ban, per source
	// or per user. Do not tell the client why either.
	Unproven
)

func (s Status) String() string {
	switch s {
	case Missing:
		return "missing"
	case OK:
		return "ok"
	case Stale:
		return "stale"
	case Failed:
		return "failed"
	case Malformed:
		return "malformed"
	case Unproven:
		return "unproven"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Result is what Verify found.
type Result struct {
	Status Status
	// User is the authenticated user when Status is OK. Otherwise it is the username the
	// client claimed, if any: untrusted, for logs and per-user ban counters only.
	User string
	// Reason is a short explanation for logs. Never send it to the client: it tells unknown
	// users from wrong passwords.
	Reason string
}

// Authenticator issues challenges and verifies credentials. It is safe for concurrent use.
type Authenticator struct {
	realm   string
	algs    []*algorithm
	ttl     int64 // nanoseconds
	creds   Credentials
	macKey  []byte
	macPool sync.Pool
	// dummy HA1 per algorithm, so an unknown user costs the same hashing as a known one.
	dummy  map[*algorithm]string
	counts *ncStore
	now    func() time.Time
}

// New returns an Authenticator. It panics if cfg is invalid; call Config.Validate first when
// cfg comes from a file.
func New(cfg Config, creds Credentials) *Authenticator {
	cfg, err := cfg.normalize()
	if err != nil {
		panic(err)
	}
	if creds == nil {
		panic("auth: nil Credentials")
	}
	secret := cfg.Secret
	if secret == nil {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret) // crypto/rand.Read never fails on supported platforms
	}
	// Derive a per-realm key so one shared secret cannot mint nonces across realms.
	kdf := hmac.New(sha256.New, secret)
	// v2: the tag covers the source prefix too, so v1 nonces must not verify.
	kdf.Write([]byte("dualgate sip/auth nonce v2\x00"))
	kdf.Write([]byte(cfg.Realm))
	a := &Authenticator{
		realm:  cfg.Realm,
		ttl:    int64(cfg.NonceTTL),
		creds:  creds,
		macKey: kdf.Sum(nil),
		dummy:  make(map[*algorithm]string),
		counts: newNCStore(cfg.MaxNonces),
		now:    time.Now,
	}
	a.macPool.New = func() any { return &macState{h: hmac.New(sha256.New, a.macKey)} }
	for _, name := range cfg.Algorithms {
		al := lookupAlgorithm(name)
		a.algs = append(a.algs, al)
		raw := make([]byte, al.size)
		_, _ = rand.Read(raw)
		a.dummy[al] = hex.EncodeToString(raw)
	}
	return a
}

// Challenge returns the values for WWW-Authenticate (401, REGISTER) or Proxy-Authenticate
// (407, other methods): one per offered algorithm, strongest first, sharing one nonce. dst is
// the address the response goes to (the request's source): the nonce is good only from its
// prefix (see Unproven).
func (a *Authenticator) Challenge(stale bool, dst netip.Addr) []string {
	nonce := a.newNonce(a.now(), dst)
	realm := quote(a.realm)
	out := make([]string, len(a.algs))
	for i, al := range a.algs {
		var b strings.Builder
		b.Grow(len(realm) + len(nonce) + 80)
		b.WriteString("Digest realm=")
		b.WriteString(realm)
		b.WriteString(`, nonce="`)
		b.WriteString(nonce)
		b.WriteString(`", algorithm=`)
		b.WriteString(al.name)
		b.WriteString(`, qop="auth"`)
		if stale {
			b.WriteString(", stale=true")
		}
		out[i] = b.String()
	}
	return out
}

// Verify checks the Authorization (or Proxy-Authorization) values of a request whose method
// is method. Only Digest credentials whose realm equals ours are considered, and of those
// only the first: a request may carry credentials for several realms, but trying several for
// ours would multiply an attacker's guesses per request. src is the request's source address;
// only a nonce issued to its prefix can make the result anything but Unproven, Malformed or
// Missing.
func (a *Authenticator) Verify(method string, credentials []string, src netip.Addr) Result {
	var p params
	malformed := ""
	for i, v := range credentials {
		if i == maxHeaders {
			return Result{Status: Malformed, Reason: "too many credentials"}
		}
		if len(v) > maxValueLen {
			malformed = "credentials too long"
			continue
		}
		p = params{}
		switch err := parse(v, &p); {
		case err == errNotDigest:
			continue
		case err != nil:
			malformed = err.Error()
			continue
		}
		if p.has&pRealm == 0 {
			malformed = "missing realm"
			continue
		}
		if p.realm != a.realm {
			continue
		}
		return a.check(method, &p, src)
	}
	if malformed != "" {
		return Result{Status: Malformed, Reason: malformed}
	}
	return Result{Status: Missing, Reason: "no credentials for realm"}
}

func (a *Authenticator) check(method string, p *params, src netip.Addr) Result {
	for _, req := range [...]struct {
		bit  uint32
		name string
	}{{pUsername, "username"}, {pNonce, "nonce"}, {pURI, "uri"}, {pResponse, "response"}} {
		if p.has&req.bit == 0 {
			return Result{Status: Malformed, User: p.username, Reason: "missing " + req.name}
		}
	}
	fail := func(reason string) Result { return Result{Status: Failed, User: p.username, Reason: reason} }

	// Syntax first: a broken header is Malformed wherever it comes from.
	hasQop := p.has&pQop != 0
	var nc uint32
	if hasQop {
		if p.has&pCnonce == 0 || p.cnonce == "" {
			return Result{Status: Malformed, User: p.username, Reason: "missing cnonce"}
		}
		if p.has&pNC == 0 {
			return Result{Status: Malformed, User: p.username, Reason: "missing nc"}
		}
		var ok bool
		if nc, ok = parseNC(p.nc); !ok {
			return Result{Status: Malformed, User: p.username, Reason: "bad nc"}
		}
	}
	// Then the nonce, before any outcome that counts toward bans: only an answer on a nonce
	// we sent to this source proves the sender is there (see Unproven).
	key, issued, ok := a.openNonce(p.nonce, src)
	if !ok {
		return Result{Status: Unproven, User: p.username, Reason: "nonce not issued to this source"}
	}

	var al *algorithm
	if p.has&pAlgorithm == 0 {
		al = &algMD5 // RFC 2617 §3.2.2: absent means MD5
	} else {
		al = lookupAlgorithm(p.algorithm)
	}
	if al == nil || !a.offers(al) {
		return fail("unsupported algorithm")
	}
	if p.has&pUserhash != 0 && !strings.EqualFold(p.userhash, "false") {
		return fail("userhash unsupported")
	}
	// RFC 2069 responses (no qop) carry no nc, so nothing stops their replay.
	if !hasQop {
		return fail("qop required")
	}
	if !strings.EqualFold(p.qop, "auth") {
		return fail("unsupported qop")
	}
	var got [sha256.Size]byte
	if len(p.response) != 2*al.size || !decodeHex(got[:al.size], p.response) {
		return fail("bad response format")
	}

	ha1, known := a.creds.HA1(p.username, al.name)
	if !known {
		ha1 = a.dummy[al]
	}
	var want [sha256.Size]byte
	al.response(want[:0], ha1, p.nonce, p.nc, p.cnonce, p.qop, method, p.uri)
	match := subtle.ConstantTimeCompare(want[:al.size], got[:al.size]) == 1
	if !known {
		return fail("unknown user")
	}
	if !match {
		return fail("wrong response")
	}

	now := a.now().UnixNano()
	switch age := now - issued; {
	case age >= a.ttl:
		return Result{Status: Stale, User: p.username, Reason: "nonce expired"}
	case age < -int64(maxFutureSkew):
		return Result{Status: Stale, User: p.username, Reason: "nonce from the future"}
	}
	switch a.counts.use(key, issued, issued+a.ttl, nc, now) {
	case ncReplay:
		return fail("nonce-count replay")
	case ncEvicted:
		return Result{Status: Stale, User: p.username, Reason: "nonce state evicted"}
	case ncExpired:
		return Result{Status: Stale, User: p.username, Reason: "nonce expired"}
	}
	return Result{Status: OK, User: p.username, Reason: "ok"}
}

func (a *Authenticator) offers(al *algorithm) bool {
	for _, o := range a.algs {
		if o == al {
			return true
		}
	}
	return false
}

// algorithm is a digest hash.
type algorithm struct {
	name string
	size int
}

var (
	algMD5    = algorithm{"MD5", md5.Size}
	algSHA256 = algorithm{"SHA-256", sha256.Size}
)

// sum appends H(data) in binary to dst. A switch, not a func field: data passed to an
// indirect call escapes, which would cost an allocation per hash.
func (al *algorithm) sum(dst, data []byte) []byte {
	if al == &algMD5 {
		s := md5.Sum(data)
		return append(dst, s[:]...)
	}
	s := sha256.Sum256(data)
	return append(dst, s[:]...)
}

func lookupAlgorithm(name string) *algorithm {
	switch {
	case strings.EqualFold(name, algMD5.name):
		return &algMD5
	case strings.EqualFold(name, algSHA256.name):
		return &algSHA256
	}
	return nil
}

// response appends the binary RFC 2617 qop=auth response
// H(HA1:nonce:nc:cnonce:qop:H(method:uri)) to dst. Values are hashed exactly as the client
// sent them, since that is what the client hashed.
func (al *algorithm) response(dst []byte, ha1, nonce, nc, cnonce, qop, method, uri string) []byte {
	var stack [512]byte
	buf := append(stack[:0], method...)
	buf = append(buf, ':')
	buf = append(buf, uri...)
	var ha2 [sha256.Size]byte
	al.sum(ha2[:0], buf)
	buf = append(buf[:0], ha1...)
	for _, s := range [...]string{nonce, nc, cnonce, qop} {
		buf = append(buf, ':')
		buf = append(buf, s...)
	}
	buf = append(buf, ':')
	buf = hex.AppendEncode(buf, ha2[:al.size])
	return al.sum(dst, buf)
}

// parseNC accepts 1 to 8 hex digits (RFC 2617 says exactly 8; some clients pad less) and
// refuses zero, which no correct client sends.
func parseNC(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 8 {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(s); i++ {
		d := unhex(s[i])
		if d > 15 {
			return 0, false
		}
		n = n<<4 | uint32(d)
	}
	return n, n != 0
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

// decodeHex decodes s into dst (len(s) == 2*len(dst)) without converting s to []byte, which
// would allocate. Upper case is accepted: RFC 2617 asks for lower, some clients send upper.
func decodeHex(dst []byte, s string) bool {
	for i := range dst {
		hi, lo := unhex(s[2*i]), unhex(s[2*i+1])
		if hi > 15 || lo > 15 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func quote(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// macState is a pooled HMAC with its own buffers: hash.Hash is an interface, so slices
// handed to it escape, and stack buffers would be moved to the heap on every call.
type macState struct {
	h   hash.Hash
	in  [macInLen]byte
	out [sha256.Size]byte
}

// hmacTag writes the tag of issued || random || binding to out.
func (a *Authenticator) hmacTag(out []byte, msg *[issuedLen + randomLen]byte, b *binding) {
	m := a.macPool.Get().(*macState)
	m.h.Reset()
	*(*[issuedLen + randomLen]byte)(m.in[:]) = *msg
	*(*binding)(m.in[issuedLen+randomLen:]) = *b
	m.h.Write(m.in[:])
	copy(out, m.h.Sum(m.out[:0]))
	a.macPool.Put(m)
}
