package auth

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	realm  = "dualgate"
	method = "REGISTER"
	uri    = "sip:dualgate.example.com"
)

// users is a Credentials that computes HA1 from plain passwords with the standard library,
// independently of the package.
type users map[string]string

func (u users) HA1(user, algorithm string) (string, bool) {
	pw, ok := u[user]
	if !ok {
		return "", false
	}
	return hexHash(algorithm, user+":"+realm+":"+pw), true
}

var alice = users{"alice": "s3cret", "bob": "hunter2"}

// Sources: the fixture's challenges go to srcA; srcB is anyone else.
var (
	srcA = netip.MustParseAddr("192.0.2.10")
	srcB = netip.MustParseAddr("192.0.2.11")
)

func hexHash(alg, s string) string {
	if strings.EqualFold(alg, "SHA-256") {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// cred describes one Authorization value; build computes its response from the password.
type cred struct {
	alg, algParam       string // algParam is what goes on the wire; "-" omits it
	user, realm, pass   string
	nonce, uri, method  string
	nc, cnonce, qop     string
	extra               string
	omitURI, omitCnonce bool
}

func (c cred) build() string {
	if c.alg == "" {
		c.alg = "MD5"
	}
	if c.algParam == "" {
		c.algParam = c.alg
	}
	if c.realm == "" {
		c.realm = realm
	}
	if c.method == "" {
		c.method = method
	}
	if c.uri == "" {
		c.uri = uri
	}
	if c.nc == "" {
		c.nc = "00000001"
	}
	if c.cnonce == "" {
		c.cnonce = "0a4f113b"
	}
	ha1 := hexHash(c.alg, c.user+":"+c.realm+":"+c.pass)
	ha2 := hexHash(c.alg, c.method+":"+c.uri)
	var resp string
	if c.qop == "-" {
		resp = hexHash(c.alg, ha1+":"+c.nonce+":"+ha2)
	} else {
		if c.qop == "" {
			c.qop = "auth"
		}
		resp = hexHash(c.alg, ha1+":"+c.nonce+":"+c.nc+":"+c.cnonce+":"+c.qop+":"+ha2)
	}
	s := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s"`, c.user, c.realm, c.nonce)
	if !c.omitURI {
		s += fmt.Sprintf(`, uri="%s"`, c.uri)
	}
	if c.algParam != "-" {
		s += ", algorithm=" + c.algParam
	}
	if c.qop != "-" {
		s += ", qop=" + c.qop + ", nc=" + c.nc
		if !c.omitCnonce {
			s += `, cnonce="` + c.cnonce + `"`
		}
	}
	return s + `, response="` + resp + `"` + c.extra
}

type fixture struct {
	a     *Authenticator
	clock time.Time
	mu    sync.Mutex
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	if cfg.Realm == "" {
		cfg.Realm = realm
	}
	f := &fixture{clock: time.Unix(1_700_000_000, 0)}
	f.a = New(cfg, alice)
	f.a.now = func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.clock
	}
	return f
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.clock = f.clock.Add(d)
	f.mu.Unlock()
}

var nonceRE = regexp.MustCompile(`nonce="([^"]+)"`)

func (f *fixture) nonce(t testing.TB) string {
	t.Helper()
	m := nonceRE.FindStringSubmatch(f.a.Challenge(false, srcA)[0])
	if m == nil {
		t.Fatal("no nonce in challenge")
	}
	return m[1]
}

func TestVerify(t *testing.T) {
	ok := func(alg string) cred { return cred{alg: alg, user: "alice", pass: "s3cret"} }
	with := func(c cred, f func(*cred)) cred { f(&c); return c }
	tests := []struct {
		name   string
		cfg    Config
		values func(t *testing.T, nonce string) []string // nil values: build from c
		c      cred
		age    time.Duration
		want   Status
		reason string
	}{
		{name: "MD5", c: ok("MD5"), want: OK},
		{name: "SHA-256", c: ok("SHA-256"), want: OK},
		{name: "algorithm absent means MD5", c: with(ok("MD5"), func(c *cred) { c.algParam = "-" }), want: OK},
		{name: "algorithm name case-insensitive", c: with(ok("SHA-256"), func(c *cred) { c.algParam = "sha-256" }), want: OK},
		{name: "upper-case response hex", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = n
			s := v.build()
			i := strings.Index(s, `response="`) + len(`response="`)
			return []string{s[:i] + strings.ToUpper(s[i:])}
		}, want: OK},
		{name: "short nc", c: with(ok("MD5"), func(c *cred) { c.nc = "1" }), want: OK},
		{name: "escaped username", values: func(t *testing.T, n string) []string {
			v := cred{user: "bob", pass: "hunter2", nonce: n}
			return []string{strings.Replace(v.build(), `username="bob"`, `username="b\ob"`, 1)}
		}, want: OK},
		{name: "tabs and odd spacing", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = n
			s := strings.ReplaceAll(v.build(), ", ", " ,\t")
			return []string{"digest\t" + strings.TrimPrefix(s, "Digest ")}
		}, want: OK},

		{name: "wrong password", c: with(ok("MD5"), func(c *cred) { c.pass = "guess" }), want: Failed, reason: "wrong response"},
		{name: "wrong password SHA-256", c: with(ok("SHA-256"), func(c *cred) { c.pass = "guess" }), want: Failed},
		{name: "unknown user", c: with(ok("MD5"), func(c *cred) { c.user = "mallory" }), want: Failed, reason: "unknown user"},
		{name: "wrong method", c: with(ok("MD5"), func(c *cred) { c.method = "INVITE" }), want: Failed},
		{name: "other realm ignored", c: with(ok("MD5"), func(c *cred) { c.realm = "elsewhere" }), want: Missing},
		{name: "no credentials", values: func(*testing.T, string) []string { return nil }, want: Missing},
		{name: "basic scheme ignored", values: func(*testing.T, string) []string { return []string{"Basic YWxpY2U6czNjcmV0"} }, want: Missing},
		{name: "not quite digest", values: func(*testing.T, string) []string { return []string{`Digestive username="a"`} }, want: Missing},

		{name: "expired nonce, right password", c: ok("MD5"), age: 5*time.Minute + time.Second, want: Stale},
		{name: "expired nonce at exactly TTL", c: ok("SHA-256"), age: 5 * time.Minute, want: Stale},
		{name: "nonce just before TTL", c: ok("SHA-256"), age: 5*time.Minute - time.Second, want: OK},
		{name: "expired nonce, wrong password", c: with(ok("MD5"), func(c *cred) { c.pass = "guess" }), age: time.Hour, want: Failed},
		{name: "nonce from the future", c: ok("MD5"), age: -2 * time.Minute, want: Stale},

		{name: "tampered nonce tag", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = tamper(t, n, nonceLen-2) // not the last character: its low bits are padding
			return []string{v.build()}
		}, want: Unproven, reason: "nonce not issued to this source"},
		{name: "tampered nonce time", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = tamper(t, n, 5)
			return []string{v.build()}
		}, want: Unproven},
		{name: "tampered nonce random", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = tamper(t, n, 15)
			return []string{v.build()}
		}, want: Unproven},
		{name: "nonce from another secret", values: func(*testing.T, string) []string {
			other := New(Config{Realm: realm, Secret: []byte("0123456789abcdef-other")}, alice)
			v := ok("MD5")
			v.nonce = nonceRE.FindStringSubmatch(other.Challenge(false, srcA)[0])[1]
			return []string{v.build()}
		}, want: Unproven},
		{name: "nonce from another realm, same secret", cfg: Config{Secret: []byte("0123456789abcdef")}, values: func(*testing.T, string) []string {
			other := New(Config{Realm: "other", Secret: []byte("0123456789abcdef")}, alice)
			v := ok("MD5")
			v.nonce = nonceRE.FindStringSubmatch(other.Challenge(false, srcA)[0])[1]
			return []string{v.build()}
		}, want: Unproven},
		{name: "made-up nonce", values: func(*testing.T, string) []string {
			v := ok("MD5")
			v.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
			return []string{v.build()}
		}, want: Unproven},
		// Policy refusals count only on a proven nonce: on a made-up one they would let a
		// spoofer pick a counted outcome.
		{name: "no qop on a made-up nonce", values: func(*testing.T, string) []string {
			v := ok("MD5")
			v.qop, v.nonce = "-", "dcd98b7102dd2f0e8b11d0f600bfb0c093"
			return []string{v.build()}
		}, want: Unproven},
		{name: "unsupported algorithm on a made-up nonce", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.algParam, v.nonce = "SHA-512", tamper(t, n, 5)
			return []string{v.build()}
		}, want: Unproven},

		{name: "no qop (RFC 2069)", c: with(ok("MD5"), func(c *cred) { c.qop = "-" }), want: Failed, reason: "qop required"},
		{name: "qop auth-int", c: with(ok("MD5"), func(c *cred) { c.qop = "auth-int" }), want: Failed, reason: "unsupported qop"},
		{name: "MD5-sess refused", c: with(ok("MD5"), func(c *cred) { c.algParam = "MD5-sess" }), want: Failed, reason: "unsupported algorithm"},
		{name: "SHA-512 refused", c: with(ok("MD5"), func(c *cred) { c.algParam = "SHA-512" }), want: Failed, reason: "unsupported algorithm"},
		{name: "algorithm not offered", cfg: Config{Algorithms: []string{"SHA-256"}}, c: ok("MD5"), want: Failed, reason: "unsupported algorithm"},
		{name: "userhash", c: with(ok("MD5"), func(c *cred) { c.extra = ", userhash=true" }), want: Failed, reason: "userhash unsupported"},
		{name: "MD5-length response for SHA-256", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = n
			v.algParam = "SHA-256"
			return []string{v.build()}
		}, want: Failed, reason: "bad response format"},

		{name: "missing uri", c: with(ok("MD5"), func(c *cred) { c.omitURI = true }), want: Malformed, reason: "missing uri"},
		{name: "missing cnonce", c: with(ok("MD5"), func(c *cred) { c.omitCnonce = true }), want: Malformed, reason: "missing cnonce"},
		{name: "nc zero", c: with(ok("MD5"), func(c *cred) { c.nc = "00000000" }), want: Malformed, reason: "bad nc"},
		{name: "nc not hex", c: with(ok("MD5"), func(c *cred) { c.nc = "0000000g" }), want: Malformed, reason: "bad nc"},
		{name: "nc too long", c: with(ok("MD5"), func(c *cred) { c.nc = "000000001" }), want: Malformed, reason: "bad nc"},
		{name: "missing realm", values: func(*testing.T, string) []string {
			return []string{`Digest username="alice", nonce="x", uri="sip:a", response="00"`}
		}, want: Malformed},
		{name: "duplicate parameter", c: with(ok("MD5"), func(c *cred) { c.extra = `, uri="sip:evil"` }), want: Malformed, reason: "duplicate parameter"},
		{name: "duplicate parameter, other case", c: with(ok("MD5"), func(c *cred) { c.extra = `, URI="sip:evil"` }), want: Malformed},
		{name: "duplicate unknown parameter", c: with(ok("MD5"), func(c *cred) { c.extra = `, x=1, X=2` }), want: Malformed},
		{name: "unknown parameters ignored", c: with(ok("MD5"), func(c *cred) { c.extra = `, opaque="", foo=bar, baz="q"` }), want: OK},
		{name: "oversized value", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = n
			v.extra = `, pad="` + strings.Repeat("x", 4096) + `"`
			return []string{v.build()}
		}, want: Malformed, reason: "credentials too long"},
		{name: "too many values", values: func(*testing.T, string) []string { return make([]string, 17) }, want: Malformed},
		{name: "garbage", values: func(*testing.T, string) []string { return []string{"Digest ,,=,,"} }, want: Malformed},
		{name: "garbage after value", values: func(*testing.T, string) []string { return []string{`Digest realm="dualgate" junk`} }, want: Malformed},
		{name: "unterminated quote", values: func(*testing.T, string) []string { return []string{`Digest realm="dualgate`} }, want: Malformed},
		{name: "control character", values: func(*testing.T, string) []string { return []string{"Digest realm=\"dual\x00gate\""} }, want: Malformed},
		{name: "empty bare value", values: func(*testing.T, string) []string { return []string{`Digest realm=, nonce="x"`} }, want: Malformed},

		{name: "two headers, other realm first", values: func(t *testing.T, n string) []string {
			other := ok("MD5")
			other.realm, other.nonce, other.pass = "carrier", "abc", "whatever"
			v := ok("SHA-256")
			v.nonce = n
			return []string{other.build(), v.build()}
		}, want: OK},
		{name: "garbage then ours", values: func(t *testing.T, n string) []string {
			v := ok("MD5")
			v.nonce = n
			return []string{"Digest ===", v.build()}
		}, want: OK},
		{name: "only the first for our realm counts", values: func(t *testing.T, n string) []string {
			bad := ok("MD5")
			bad.nonce, bad.pass = n, "guess"
			good := ok("MD5")
			good.nonce = n
			return []string{bad.build(), good.build()}
		}, want: Failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.cfg)
			n := f.nonce(t)
			f.advance(tt.age)
			var values []string
			if tt.values != nil {
				values = tt.values(t, n)
			} else {
				c := tt.c
				c.nonce = n
				values = []string{c.build()}
			}
			res := f.a.Verify(method, values, srcA)
			if res.Status != tt.want || (tt.reason != "" && res.Reason != tt.reason) {
				t.Errorf("got %v %q, want %v %q\n%q", res.Status, res.Reason, tt.want, tt.reason, values)
			}
			if tt.want == OK && res.User != "alice" && res.User != "bob" {
				t.Errorf("user %q", res.User)
			}
		})
	}
}

// tamper changes character i of nonce n to another valid base64url character, so the
// result still decodes and only the HMAC can reject it.
func tamper(t testing.TB, n string, i int) string {
	t.Helper()
	b := []byte(n)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	var raw [rawLen]byte
	if !decodeBase64URL(raw[:], string(b)) {
		t.Fatalf("tampered nonce %q does not decode", b)
	}
	return string(b)
}

func TestNonceCount(t *testing.T) {
	f := newFixture(t, Config{})
	n := f.nonce(t)
	steps := []struct {
		nc     string
		cnonce string
		want   Status
		reason string
	}{
		{"00000001", "c1", OK, ""},
		{"00000001", "c1", Failed, "nonce-count replay"}, // verbatim replay
		{"00000001", "c2", Failed, "nonce-count replay"}, // same nc, fresh cnonce
		{"00000003", "c3", OK, ""},
		{"00000002", "c4", Failed, "nonce-count replay"}, // lower
		{"00000004", "c5", OK, ""},
		{"ffffffff", "c6", OK, ""},
		{"ffffffff", "c7", Failed, "nonce-count replay"},
	}
	for _, s := range steps {
		v := cred{user: "alice", pass: "s3cret", nonce: n, nc: s.nc, cnonce: s.cnonce}.build()
		res := f.a.Verify(method, []string{v}, srcA)
		if res.Status != s.want || (s.reason != "" && res.Reason != s.reason) {
			t.Errorf("nc %s: got %v %q, want %v %q", s.nc, res.Status, res.Reason, s.want, s.reason)
		}
	}
	// A wrong password must not advance the counter, or anyone holding the nonce could
	// lock the real client out.
	n2 := f.nonce(t)
	bad := cred{user: "alice", pass: "guess", nonce: n2, nc: "00000009"}.build()
	if res := f.a.Verify(method, []string{bad}, srcA); res.Status != Failed {
		t.Fatalf("bad password: %v", res.Status)
	}
	good := cred{user: "alice", pass: "s3cret", nonce: n2, nc: "00000002"}.build()
	if res := f.a.Verify(method, []string{good}, srcA); res.Status != OK {
		t.Errorf("after failed attempt: %v %q", res.Status, res.Reason)
	}
	// Nonces are independent.
	n3 := f.nonce(t)
	if res := f.a.Verify(method, []string{cred{user: "alice", pass: "s3cret", nonce: n3}.build()}, srcA); res.Status != OK {
		t.Errorf("fresh nonce: %v %q", res.Status, res.Reason)
	}
}

func TestNonceCountConcurrent(t *testing.T) {
	f := newFixture(t, Config{})
	nonces := []string{f.nonce(t), f.nonce(t), f.nonce(t)}
	const workers, per = 8, 50
	var okCount atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				// Every worker sends every nc for every nonce, so each (nonce, nc) pair
				// arrives workers times; exactly one may pass, and only if no higher nc
				// has passed already.
				n := nonces[(w+i)%len(nonces)]
				v := cred{user: "alice", pass: "s3cret", nonce: n, nc: fmt.Sprintf("%08x", i+1)}.build()
				if f.a.Verify(method, []string{v}, srcA).Status == OK {
					okCount.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := okCount.Load(); got < per || got > per*int64(len(nonces)) {
		t.Errorf("%d accepted, want between %d and %d", got, per, per*len(nonces))
	}
}

func TestNCStoreEviction(t *testing.T) {
	s := newNCStore(ncShards * 2) // two entries per shard
	key := func(issued int64, r byte) nonceKey {
		var k nonceKey
		for i := range 8 {
			k[i] = byte(issued >> (56 - 8*i))
		}
		k[issuedLen] = r * ncShards // all in shard 0
		k[issuedLen+1] = r
		return k
	}
	const ttl = int64(time.Minute)
	now := int64(10 * time.Minute)
	use := func(issued int64, r byte, nc uint32) ncResult {
		return s.use(key(issued, r), issued, issued+ttl, nc, now)
	}
	if use(now-3, 1, 1) != ncOK || use(now-2, 2, 1) != ncOK {
		t.Fatal("first uses")
	}
	if got := use(now-1, 3, 1); got != ncOK { // evicts r=1 while still valid
		t.Fatalf("third use: %v", got)
	}
	if got := use(now-3, 1, 2); got != ncEvicted {
		t.Errorf("evicted nonce: %v, want ncEvicted", got)
	}
	if got := use(now-4, 4, 1); got != ncEvicted {
		t.Errorf("older unseen nonce: %v, want ncEvicted", got)
	}
	if got := use(now-2, 2, 1); got != ncReplay {
		t.Errorf("kept nonce replay: %v", got)
	}
	if got := use(now-1, 3, 5); got != ncOK {
		t.Errorf("kept nonce: %v", got)
	}
	// Expired entries go without raising the floor.
	now += 2 * ttl
	if got := use(now, 5, 1); got != ncOK {
		t.Errorf("after expiry: %v", got)
	}
	if sh := &s.shards[0]; len(sh.m) != 1 || sh.floor != now-2*ttl-3 {
		t.Errorf("shard holds %d entries, floor %d", len(sh.m), sh.floor)
	}
}

// TestNCStorePruneRace: a caller that read the clock before another caller pruned must not
// restart the history of a nonce the prune removed.
func TestNCStorePruneRace(t *testing.T) {
	s := newNCStore(1000)
	const ttl = int64(time.Minute)
	now := int64(10 * time.Minute)
	issued := now - ttl + 1
	var k nonceKey
	k[issuedLen] = 7
	if got := s.use(k, issued, issued+ttl, 1, now-5); got != ncOK {
		t.Fatalf("first use: %v", got)
	}
	s.shards[7].prune(now + 2) // another caller, a little later, drops the expired entry
	if got := s.use(k, issued, issued+ttl, 1, now); got != ncExpired {
		t.Errorf("replay by a caller with an older clock reading: %v, want ncExpired", got)
	}
}

func TestEvictedNonceIsStale(t *testing.T) {
	f := newFixture(t, Config{MaxNonces: 1}) // one entry per shard
	// Find two nonces that land in the same shard.
	seen := map[byte]string{}
	var first, second string
	for first == "" {
		n := f.nonce(t)
		k, _, _ := f.a.openNonce(n, srcA)
		s := k[issuedLen] % ncShards
		if prev, ok := seen[s]; ok {
			first, second = prev, n
		}
		seen[s] = n
	}
	for _, n := range []string{first, second} {
		if res := f.a.Verify(method, []string{cred{user: "alice", pass: "s3cret", nonce: n}.build()}, srcA); res.Status != OK {
			t.Fatalf("%v %q", res.Status, res.Reason)
		}
	}
	res := f.a.Verify(method, []string{cred{user: "alice", pass: "s3cret", nonce: first, nc: "2"}.build()}, srcA)
	if res.Status != Stale || res.Reason != "nonce state evicted" {
		t.Errorf("evicted nonce: %v %q", res.Status, res.Reason)
	}
}

func TestChallenge(t *testing.T) {
	f := newFixture(t, Config{})
	re := regexp.MustCompile(`^Digest realm="dualgate", nonce="[A-Za-z0-9_-]{43}", algorithm=(SHA-256|MD5), qop="auth"(, stale=true)?$`)
	for _, stale := range []bool{false, true} {
		ch := f.a.Challenge(stale, srcA)
		if len(ch) != 2 || !strings.Contains(ch[0], "algorithm=SHA-256") || !strings.Contains(ch[1], "algorithm=MD5") {
			t.Fatalf("challenge order: %q", ch)
		}
		for _, c := range ch {
			if m := re.FindStringSubmatch(c); m == nil || (m[2] != "") != stale {
				t.Errorf("stale=%v: %q", stale, c)
			}
		}
		if nonceRE.FindStringSubmatch(ch[0])[1] != nonceRE.FindStringSubmatch(ch[1])[1] {
			t.Error("values should share one nonce")
		}
	}
	if a, b := f.nonce(t), f.nonce(t); a == b {
		t.Error("nonces repeat")
	}
	q := New(Config{Realm: `a"b\c`, Algorithms: []string{"md5"}}, alice).Challenge(false, srcA)
	if len(q) != 1 || !strings.HasPrefix(q[0], `Digest realm="a\"b\\c", `) || !strings.Contains(q[0], "algorithm=MD5,") {
		t.Errorf("quoting: %q", q)
	}
}

func TestConfig(t *testing.T) {
	bad := []Config{
		{},
		{Realm: "a\r\nb"},
		{Realm: "r", Algorithms: []string{"MD5-sess"}},
		{Realm: "r", Algorithms: []string{"SHA-512"}},
		{Realm: "r", Algorithms: []string{"MD5", "md5"}},
		{Realm: "r", NonceTTL: -1},
		{Realm: "r", Secret: []byte("short")},
		{Realm: "r", MaxNonces: -1},
	}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("accepted %+v", c)
		}
	}
	if err := (Config{Realm: "r", Algorithms: []string{"sha-256"}, Secret: make([]byte, 16)}).Validate(); err != nil {
		t.Error(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("New accepted an invalid config")
		}
	}()
	New(Config{}, alice)
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{Missing: "missing", OK: "ok", Stale: "stale", Failed: "failed", Malformed: "malformed", Unproven: "unproven", 9: "Status(9)"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
	var zero Result
	if zero.Status == OK {
		t.Error("zero Result reads as success")
	}
}

// TestNonceBoundToSource: a nonce is good only from the prefix its challenge was sent to
// (the IPv4 address, the IPv6 /64). Anything else is Unproven, whatever the password, so a
// spoofed answer can never be counted as a failure.
func TestNonceBoundToSource(t *testing.T) {
	v6a := netip.MustParseAddr("2001:db8:1:2:aaaa::1")
	v6sameNet := netip.MustParseAddr("2001:db8:1:2:bbbb:cccc:dddd:eeee") // a privacy address, same /64
	v6otherNet := netip.MustParseAddr("2001:db8:1:3:aaaa::1")
	issue := func(f *fixture, dst netip.Addr) string {
		t.Helper()
		m := nonceRE.FindStringSubmatch(f.a.Challenge(false, dst)[0])
		if m == nil {
			t.Fatal("no nonce")
		}
		return m[1]
	}
	tests := []struct {
		name     string
		to, from netip.Addr
		pass     string
		nonce    func(t *testing.T, issued string) string // nil: as issued
		age      time.Duration
		want     Status
	}{
		{name: "IPv4 same address", to: srcA, from: srcA, pass: "s3cret", want: OK},
		{name: "IPv4 other address, right password", to: srcA, from: srcB, pass: "s3cret", want: Unproven},
		{name: "IPv4 other address, wrong password", to: srcA, from: srcB, pass: "guess", want: Unproven},
		{name: "IPv4 wrong password from the address", to: srcA, from: srcA, pass: "guess", want: Failed},
		{name: "IPv4-mapped IPv6 is the IPv4 address", to: srcA, from: netip.AddrFrom16(srcA.As16()), pass: "s3cret", want: OK},
		{name: "IPv6 same address", to: v6a, from: v6a, pass: "s3cret", want: OK},
		{name: "IPv6 same /64", to: v6a, from: v6sameNet, pass: "s3cret", want: OK},
		{name: "IPv6 same /64, wrong password", to: v6a, from: v6sameNet, pass: "guess", want: Failed},
		{name: "IPv6 other /64", to: v6a, from: v6otherNet, pass: "s3cret", want: Unproven},
		{name: "IPv6 other /64, wrong password", to: v6a, from: v6otherNet, pass: "guess", want: Unproven},
		{name: "IPv4 nonce from IPv6", to: srcA, from: v6a, pass: "guess", want: Unproven},
		{name: "IPv6 ::/64 is not the invalid address", to: netip.MustParseAddr("::1"), from: netip.Addr{}, pass: "s3cret", want: Unproven},
		{name: "forged nonce", to: srcA, from: srcA, pass: "guess", want: Unproven,
			nonce: func(t *testing.T, n string) string { return tamper(t, n, nonceLen-2) }},
		{name: "made-up nonce", to: srcA, from: srcA, pass: "s3cret", want: Unproven,
			nonce: func(*testing.T, string) string { return strings.Repeat("A", nonceLen-1) + "A" }},
		{name: "stale from the address", to: srcA, from: srcA, pass: "s3cret", age: time.Hour, want: Stale},
		{name: "stale IPv6 from the same /64", to: v6a, from: v6sameNet, pass: "s3cret", age: time.Hour, want: Stale},
		{name: "expired, from another address", to: srcA, from: srcB, pass: "s3cret", age: time.Hour, want: Unproven},
		{name: "expired, wrong password from the address", to: srcA, from: srcA, pass: "guess", age: time.Hour, want: Failed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			n := issue(f, tt.to)
			if tt.nonce != nil {
				n = tt.nonce(t, n)
			}
			f.advance(tt.age)
			res := f.a.Verify(method, []string{cred{user: "alice", pass: tt.pass, nonce: n}.build()}, tt.from)
			if res.Status != tt.want {
				t.Fatalf("got %v %q, want %v", res.Status, res.Reason, tt.want)
			}
			if res.User != "alice" {
				t.Errorf("claimed user %q, want alice (for logs)", res.User)
			}
		})
	}
}

// TestUnprovenLeavesNonceCount: answers from elsewhere, right password or not, neither use up
// a nonce-count nor show up as replays; replays from the nonce's own address still fail.
func TestUnprovenLeavesNonceCount(t *testing.T) {
	f := newFixture(t, Config{})
	n := f.nonce(t)
	good := cred{user: "alice", pass: "s3cret", nonce: n, nc: "00000005"}.build()
	if res := f.a.Verify(method, []string{good}, srcB); res.Status != Unproven {
		t.Fatalf("from elsewhere: %v %q", res.Status, res.Reason)
	}
	if res := f.a.Verify(method, []string{good}, srcA); res.Status != OK {
		t.Fatalf("from the address after a spoofed copy: %v %q", res.Status, res.Reason)
	}
	if res := f.a.Verify(method, []string{good}, srcB); res.Status != Unproven {
		t.Errorf("replay from elsewhere: %v %q, want unproven", res.Status, res.Reason)
	}
	if res := f.a.Verify(method, []string{good}, srcA); res.Status != Failed || res.Reason != "nonce-count replay" {
		t.Errorf("replay from the address: %v %q, want a failed replay", res.Status, res.Reason)
	}
}
