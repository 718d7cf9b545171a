package auth

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAttacks is the JWT attack table. Every refused case must answer 401 with the named
// reason and must never reach the protected handler; positive controls in the same table
// prove each verifier accepts a correct token, so a refusal is the check working and not a
// broken setup. Cases whose refusal could be an accident of the token being junk carry a
// control that shows the token is a genuine forgery against a naive verifier.
func TestAttacks(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	rsaPEM := pemPublic(t, &k.rsa1.PublicKey)
	rsaFile := writeFile(t, dir, "rsa1.pem", rsaPEM)
	rsaDER, _ := x509.MarshalPKIXPublicKey(&k.rsa1.PublicKey)
	jwksFile := writeFile(t, dir, "keys.json", jwksDoc(
		jwkOf("r1", &k.rsa1.PublicKey, nil),
		jwkOf("e1", &k.ec1.PublicKey, nil),
		jwkOf("o1", k.ed1.Public(), nil),
	))

	verifiers := map[string]*Verifier{
		"HS256": newTestVerifier(t, nil),
		"RS256": newTestVerifier(t, func(c *Config) {
			c.Algorithms, c.SecretFile, c.PublicKeyFiles = []string{AlgRS256}, "", []string{rsaFile}
		}),
		"HS256+RS256": newTestVerifier(t, func(c *Config) {
			c.Algorithms, c.PublicKeyFiles = []string{AlgHS256, AlgRS256}, []string{rsaFile}
		}),
		"JWKS": newTestVerifier(t, func(c *Config) {
			c.Algorithms, c.SecretFile, c.JWKSFile = []string{AlgRS256, AlgES256, AlgEdDSA}, "", jwksFile
		}),
	}

	hs := func(mods ...func(jwt.MapClaims)) string {
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims(mods...))
	}
	rs := func(kid string, mods ...func(jwt.MapClaims)) string {
		return sign(t, jwt.SigningMethodRS256, k.rsa1, map[string]any{"kid": kid}, claims(mods...))
	}
	now := time.Now()
	valid := hs()
	validParts := strings.Split(valid, ".")

	// alg none: a well-formed unsigned token.
	none := rawToken(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(), "")
	// Algorithm confusion: HS256 keyed with the RSA public key's PEM file bytes, which an
	// attacker can download; a verifier that hands "the key" to whatever alg the header names
	// would accept it.
	confused := sign(t, jwt.SigningMethodHS256, rsaPEM, nil, claims(set("roles", []string{"admin"})))
	confusedKid := sign(t, jwt.SigningMethodHS256, rsaPEM, map[string]any{"kid": "rsa1"}, claims(set("roles", []string{"admin"})))
	confusedDER := sign(t, jwt.SigningMethodHS256, rsaDER, nil, claims(set("roles", []string{"admin"})))
	// Bad signature: payload swapped for an escalated one after signing.
	edited := validParts[0] + "." + b64u(mustJSON(t, claims(set("sub", "mallory"), set("roles", []string{"admin"})))) + "." + validParts[2]
	rsValid := rs("rsa1")
	rsParts := strings.Split(rsValid, ".")
	editedRS := rsParts[0] + "." + b64u(mustJSON(t, claims(set("roles", []string{"admin"})))) + "." + rsParts[2]
	esValid := sign(t, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "e1"}, claims())
	esParts := strings.Split(esValid, ".")
	editedES := esParts[0] + "." + b64u(mustJSON(t, claims(set("roles", []string{"admin"})))) + "." + esParts[2]
	// Non-canonical base64 in the signature: same bytes under lenient decoding.
	sig := validParts[2]
	last := strings.IndexByte(base64URLAlphabet, sig[len(sig)-1])
	malleable := validParts[0] + "." + validParts[1] + "." + sig[:len(sig)-1] + string(base64URLAlphabet[last^1])
	// Oversized: validly signed, just big.
	oversized := hs(set("pad", strings.Repeat("x", 5000)))

	ok := http.StatusOK
	type tc struct {
		name    string
		v       string
		req     *http.Request
		want    int
		reason  error
		checkOK func(t *testing.T, c *Claims)
		control func(t *testing.T) // shows the attack token would pass a weaker check
	}
	cases := []tc{
		{name: "valid HS256 (control)", v: "HS256", req: bearer(valid), want: ok, checkOK: func(t *testing.T, c *Claims) {
			if c.Subject != "alice" || !c.HasRole(RoleAgent) || c.HasRole(RoleAdmin) || c.ID != "j1" {
				t.Errorf("claims in context = %+v", c)
			}
			if d := c.ExpiresAt.Sub(now.Add(time.Hour)); d < -2*time.Second || d > 2*time.Second {
				t.Errorf("ExpiresAt = %v", c.ExpiresAt)
			}
		}},
		{name: "valid RS256 (control)", v: "RS256", req: bearer(rsValid), want: ok},
		{name: "valid RS256 with HS256 also allowed (control)", v: "HS256+RS256", req: bearer(rsValid), want: ok},
		{name: "valid HS256 with RS256 also allowed (control)", v: "HS256+RS256", req: bearer(valid), want: ok},
		{name: "valid ES256 via JWKS (control)", v: "JWKS", req: bearer(esValid), want: ok},

		{name: "alg none", v: "HS256", req: bearer(none), reason: ErrAlgorithm, control: func(t *testing.T) {
			if _, err := jwt.Parse(none, func(*jwt.Token) (any, error) { return jwt.UnsafeAllowNoneSignatureType, nil }); err != nil {
				t.Fatalf("the none token is not even well formed: %v", err)
			}
		}},
		{name: "alg none with public keys allowed", v: "HS256+RS256", req: bearer(none), reason: ErrAlgorithm},
		{name: "alg NONE (case variant)", v: "HS256", req: bearer(rawToken(t, map[string]any{"alg": "NONE"}, claims(), "")), reason: ErrAlgorithm},
		{name: "alg HS512 not in allowlist", v: "HS256", req: bearer(sign(t, jwt.SigningMethodHS512, []byte(testSecret), nil, claims())), reason: ErrAlgorithm},
		{name: "alg confusion: HS256 keyed with RSA PEM, only RS256 allowed", v: "RS256", req: bearer(confused), reason: ErrAlgorithm,
			control: func(t *testing.T) {
				if _, err := jwt.Parse(confused, func(*jwt.Token) (any, error) { return rsaPEM, nil }); err != nil {
					t.Fatalf("forged token does not verify even with the PEM bytes: %v", err)
				}
			}},
		{name: "alg confusion: HS256 keyed with RSA PEM, HS256+RS256 allowed", v: "HS256+RS256", req: bearer(confused), reason: ErrSignature},
		{name: "alg confusion: HS256 keyed with RSA PEM, kid names the RSA key", v: "HS256+RS256", req: bearer(confusedKid), reason: ErrSignature},
		{name: "alg confusion: HS256 keyed with RSA DER, HS256+RS256 allowed", v: "HS256+RS256", req: bearer(confusedDER), reason: ErrSignature},
		{name: "alg confusion: ES256 header on an RSA kid", v: "JWKS", req: bearer(sign(t, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "r1"}, claims())), reason: ErrAlgorithm},

		{name: "expired", v: "HS256", req: bearer(hs(set("exp", now.Add(-time.Hour).Unix()))), reason: ErrExpired},
		{name: "expired within leeway (control)", v: "HS256", req: bearer(hs(set("exp", now.Add(-10*time.Second).Unix()))), want: ok},
		{name: "nbf beyond leeway", v: "HS256", req: bearer(hs(set("nbf", now.Add(5*time.Minute).Unix()))), reason: ErrNotYetValid},
		{name: "nbf within leeway (control)", v: "HS256", req: bearer(hs(set("nbf", now.Add(10*time.Second).Unix()))), want: ok},
		{name: "iat in the future beyond leeway", v: "HS256", req: bearer(hs(set("iat", now.Add(5*time.Minute).Unix()))), reason: ErrNotYetValid},
		{name: "exp missing", v: "HS256", req: bearer(hs(del("exp"))), reason: ErrClaims},
		{name: "exp not a number", v: "HS256", req: bearer(hs(set("exp", "tomorrow"))), reason: ErrMalformed},

		{name: "wrong issuer", v: "HS256", req: bearer(hs(set("iss", "evil"))), reason: ErrIssuer},
		{name: "issuer missing", v: "HS256", req: bearer(hs(del("iss"))), reason: ErrClaims},
		{name: "issuer differs only in case", v: "HS256", req: bearer(hs(set("iss", "DualGate"))), reason: ErrIssuer},
		{name: "wrong audience", v: "HS256", req: bearer(hs(set("aud", "other"))), reason: ErrAudience},
		{name: "audience missing", v: "HS256", req: bearer(hs(del("aud"))), reason: ErrClaims},
		{name: "audience list containing ours (control)", v: "HS256", req: bearer(hs(set("aud", []string{"other", "dualgate"}))), want: ok},

		{name: "bad signature: payload edited after signing (HS256)", v: "HS256", req: bearer(edited), reason: ErrSignature},
		{name: "bad signature: payload edited after signing (RS256)", v: "RS256", req: bearer(editedRS), reason: ErrSignature},
		{name: "bad signature: payload edited after signing (ES256)", v: "JWKS", req: bearer(editedES), reason: ErrSignature},
		{name: "bad signature: other secret", v: "HS256", req: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), nil, claims())), reason: ErrSignature},
		{name: "non-canonical base64 signature", v: "HS256", req: bearer(malleable), reason: ErrMalformed, control: func(t *testing.T) {
			a, _ := base64.RawURLEncoding.DecodeString(sig)
			b, err := base64.RawURLEncoding.DecodeString(malleable[strings.LastIndexByte(malleable, '.')+1:])
			if err != nil || string(a) != string(b) || malleable == valid {
				t.Fatal("the variant is not the same signature under lenient decoding")
			}
		}},

		{name: "unknown kid (JWKS)", v: "JWKS", req: bearer(sign(t, jwt.SigningMethodRS256, k.rsa1, map[string]any{"kid": "nope"}, claims())), reason: ErrUnknownKey,
			control: func(t *testing.T) {
				known := sign(t, jwt.SigningMethodRS256, k.rsa1, map[string]any{"kid": "r1"}, claims())
				if _, err := verifiers["JWKS"].Verify(t.Context(), known); err != nil {
					t.Fatalf("the same key under its published kid: %v", err)
				}
			}},
		{name: "kid not a string", v: "JWKS", req: bearer(sign(t, jwt.SigningMethodRS256, k.rsa1, map[string]any{"kid": 7}, claims())), reason: ErrMalformed},
		{name: "crit header", v: "HS256", req: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), map[string]any{"crit": []string{"exp"}}, claims())), reason: ErrMalformed},

		{name: "oversized token", v: "HS256", req: bearer(oversized), reason: ErrTokenTooLarge, control: func(t *testing.T) {
			big := newTestVerifier(t, func(c *Config) { c.MaxTokenBytes = 64 << 10 })
			if _, err := big.Verify(t.Context(), oversized); err != nil {
				t.Fatalf("the oversized token is not otherwise valid: %v", err)
			}
		}},
		{name: "oversized token in cookie", v: "HS256", req: cookieReq("dualgate_session", oversized), reason: ErrTokenTooLarge},

		{name: "token only in query ?token=", v: "HS256", req: httptest.NewRequest("GET", "/protected?token="+valid, nil), reason: ErrTokenInQuery},
		{name: "token only in query ?access_token=", v: "HS256", req: httptest.NewRequest("GET", "/protected?access_token="+valid, nil), reason: ErrTokenInQuery},
		{name: "token only in query ?jwt=", v: "HS256", req: httptest.NewRequest("GET", "/protected?a=1&jwt="+valid, nil), reason: ErrTokenInQuery},
		{name: "token in query beside a good header", v: "HS256", req: withHeader(httptest.NewRequest("GET", "/protected?token="+valid, nil), "Bearer "+valid), reason: ErrTokenInQuery},
		{name: "unrelated query with a good header (control)", v: "HS256", req: withHeader(httptest.NewRequest("GET", "/protected?page=2", nil), "Bearer "+valid), want: ok},

		{name: "malformed: one part", v: "HS256", req: bearer("abc"), reason: ErrMalformed},
		{name: "malformed: two parts", v: "HS256", req: bearer(validParts[0] + "." + validParts[1]), reason: ErrMalformed},
		{name: "malformed: four parts", v: "HS256", req: bearer(valid + ".x"), reason: ErrMalformed},
		{name: "malformed: bad base64", v: "HS256", req: bearer("!!!.@@@.###"), reason: ErrMalformed},
		{name: "malformed: header not JSON", v: "HS256", req: bearer(b64u([]byte("not json")) + "." + validParts[1] + "." + validParts[2]), reason: ErrMalformed},
		{name: "malformed: no alg", v: "HS256", req: bearer(rawToken(t, map[string]any{"typ": "JWT"}, claims(), validParts[2])), reason: ErrAlgorithm},

		{name: "sub missing", v: "HS256", req: bearer(hs(del("sub"))), reason: ErrClaims},
		{name: "sub empty", v: "HS256", req: bearer(hs(set("sub", ""))), reason: ErrClaims},
		{name: "sub with CRLF", v: "HS256", req: bearer(hs(set("sub", "alice\r\nVia: x"))), reason: ErrClaims},
		{name: "roles a string", v: "HS256", req: bearer(hs(set("roles", "admin"))), reason: ErrClaims},
		{name: "roles numbers", v: "HS256", req: bearer(hs(set("roles", []int{1, 2}))), reason: ErrClaims},
		{name: "roles an object", v: "HS256", req: bearer(hs(set("roles", map[string]bool{"admin": true}))), reason: ErrClaims},
		{name: "roles null", v: "HS256", req: bearer(hs(set("roles", nil))), reason: ErrClaims},
		{name: "roles missing: accepted, no power (control)", v: "HS256", req: bearer(hs(del("roles"))), want: ok, checkOK: func(t *testing.T, c *Claims) {
			if c.HasRole(RoleAgent) || c.HasRole(RoleAdmin) {
				t.Errorf("roles = %v", c.Roles)
			}
		}},
		{name: "unknown role kept without power (control)", v: "HS256", req: bearer(hs(set("roles", []string{"root", "agent"}))), want: ok, checkOK: func(t *testing.T, c *Claims) {
			if len(c.Roles) != 2 || c.HasRole("root") || !c.HasRole(RoleAgent) {
				t.Errorf("roles = %v, HasRole(root) = %v", c.Roles, c.HasRole("root"))
			}
		}},

		{name: "no credentials", v: "HS256", req: httptest.NewRequest("GET", "/protected", nil), reason: ErrNoToken},
		{name: "empty bearer", v: "HS256", req: withHeader(httptest.NewRequest("GET", "/protected", nil), "Bearer "), reason: ErrNoToken},
		{name: "Basic scheme", v: "HS256", req: withHeader(httptest.NewRequest("GET", "/protected", nil), "Basic YWxpY2U6cHc="), reason: ErrScheme},
		{name: "two Authorization headers", v: "HS256", req: func() *http.Request {
			r := bearer(valid)
			r.Header.Add("Authorization", "Bearer "+hs(set("sub", "mallory")))
			return r
		}(), reason: ErrMalformed},
		{name: "lower-case bearer scheme (control)", v: "HS256", req: withHeader(httptest.NewRequest("GET", "/protected", nil), "bearer "+valid), want: ok},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.control != nil {
				c.control(t)
			}
			res := through(t, verifiers[c.v], c.req)
			if c.want == ok {
				if res.code != ok || res.calls != 1 || res.claims == nil {
					t.Fatalf("got %d (%q), handler calls %d; want 200 with claims", res.code, res.errBody, res.calls)
				}
				if c.checkOK != nil {
					c.checkOK(t, res.claims)
				}
				return
			}
			if res.code != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401", res.code)
			}
			if res.calls != 0 {
				t.Errorf("protected handler ran %d times", res.calls)
			}
			if res.errBody != c.reason.Error() {
				t.Errorf("error body = %q, want %q", res.errBody, c.reason.Error())
			}
			if !strings.HasPrefix(res.challenge, "Bearer") || res.ctype != "application/json" {
				t.Errorf("WWW-Authenticate = %q, Content-Type = %q", res.challenge, res.ctype)
			}
			if _, err := verifiers[c.v].FromRequest(c.req); !errors.Is(err, c.reason) {
				t.Errorf("FromRequest error = %v, want %v", err, c.reason)
			}
		})
	}
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func withHeader(r *http.Request, auth string) *http.Request {
	r.Header.Set("Authorization", auth)
	return r
}

func cookieReq(name, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/protected", nil)
	r.AddCookie(&http.Cookie{Name: name, Value: value})
	return r
}
