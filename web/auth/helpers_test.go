package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "test-secret-0123456789abcdef-0123456789abcdef"

// Keys are generated once per test binary: RSA generation is slow under -race.
var testKeys = sync.OnceValue(func() (k struct {
	rsa1, rsa2, rsa3 *rsa.PrivateKey
	ec1, ec2, ec3    *ecdsa.PrivateKey
	ed1, ed2, ed3    ed25519.PrivateKey
}) {
	var err error
	for _, p := range []**rsa.PrivateKey{&k.rsa1, &k.rsa2, &k.rsa3} {
		if *p, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	}
	for _, p := range []**ecdsa.PrivateKey{&k.ec1, &k.ec2, &k.ec3} {
		if *p, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	}
	for _, p := range []*ed25519.PrivateKey{&k.ed1, &k.ed2, &k.ed3} {
		if _, *p, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	}
	return k
})

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func pad32(n *big.Int) []byte { return n.FillBytes(make([]byte, 32)) }

// jwkOf renders a public key as a JWK; extra members override or add (use, alg, ...).
func jwkOf(kid string, pub any, extra map[string]any) map[string]any {
	m := map[string]any{"kid": kid}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64u(k.N.Bytes()), b64u(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", b64u(pad32(k.X)), b64u(pad32(k.Y))
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64u(k)
	default:
		panic("jwkOf: unsupported key")
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func jwksDoc(keys ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// claims returns a valid claim set for the test config, edited by mods.
func claims(mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": "dualgate", "aud": "dualgate", "sub": "alice", "roles": []string{"agent"},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "j1",
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
func del(k string) func(jwt.MapClaims)        { return func(c jwt.MapClaims) { delete(c, k) } }

// sign signs c with m and key; hdr adds header members (a nil value deletes one).
func sign(t testing.TB, m jwt.SigningMethod, key any, hdr map[string]any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	for k, v := range hdr {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken assembles a token from JSON header and claims and a raw signature, for shapes the
// library refuses to produce.
func rawToken(t testing.TB, hdr map[string]any, c any, sig string) string {
	t.Helper()
	h, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b64u(h) + "." + b64u(p) + "." + sig
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestVerifier builds a verifier from cfg edits over the defaults; the secret file is always
// written so HS256 configs work without repeating it.
func newTestVerifier(t testing.TB, edit func(*Config)) *Verifier {
	t.Helper()
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret+"\n"))
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := NewVerifier(ctx, cfg, quietLog())
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// probe is a protected handler that records whether it ran and what claims reached it.
type probe struct {
	mu     sync.Mutex
	calls  int
	claims *Claims
}

func (p *probe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := ClaimsFrom(r.Context())
	p.mu.Lock()
	p.calls++
	p.claims = c
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

type result struct {
	code      int
	errBody   string
	challenge string
	ctype     string
	calls     int
	claims    *Claims
}

// through sends r through Middleware (and any extra wrappers, innermost first) to a fresh probe.
func through(t testing.TB, v *Verifier, r *http.Request, wrap ...func(http.Handler) http.Handler) result {
	t.Helper()
	p := &probe{}
	var h http.Handler = p
	for _, w := range wrap {
		h = w(h)
	}
	h = v.Middleware(h)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	res := result{code: rec.Code, challenge: rec.Header().Get("WWW-Authenticate"),
		ctype: rec.Header().Get("Content-Type"), calls: p.calls, claims: p.claims}
	if rec.Code != http.StatusOK {
		var body struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("error body is not JSON: %q", rec.Body.String())
		}
		res.errBody = body.Error
	}
	return res
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/protected", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}
