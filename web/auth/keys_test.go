package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestJWKSFile: per algorithm family, a JWKS document with two signature keys, one encryption
// key of the same type (use "enc", must be ignored) and a symmetric key (never taken).
func TestJWKSFile(t *testing.T) {
	k := testKeys()
	variants := []struct {
		alg           string
		method        jwt.SigningMethod
		k1, k2, enc   any // private keys
		pub1, pub2, e any
	}{
		{AlgRS256, jwt.SigningMethodRS256, k.rsa1, k.rsa2, k.rsa3, &k.rsa1.PublicKey, &k.rsa2.PublicKey, &k.rsa3.PublicKey},
		{AlgES256, jwt.SigningMethodES256, k.ec1, k.ec2, k.ec3, &k.ec1.PublicKey, &k.ec2.PublicKey, &k.ec3.PublicKey},
		{AlgEdDSA, jwt.SigningMethodEdDSA, k.ed1, k.ed2, k.ed3, k.ed1.Public(), k.ed2.Public(), k.ed3.Public()},
	}
	for _, vr := range variants {
		t.Run(vr.alg, func(t *testing.T) {
			doc := jwksDoc(
				jwkOf("k1", vr.pub1, map[string]any{"use": "sig", "alg": vr.alg}),
				jwkOf("k2", vr.pub2, nil),
				jwkOf("enc1", vr.e, map[string]any{"use": "enc"}),
				map[string]any{"kty": "oct", "kid": "hmac", "k": b64u([]byte(testSecret))},
			)
			f := writeFile(t, t.TempDir(), "jwks.json", doc)
			v := newTestVerifier(t, func(c *Config) { c.Algorithms, c.SecretFile, c.JWKSFile = []string{vr.alg}, "", f })
			if n := v.keys.Load().n; n != 2 {
				t.Fatalf("loaded %d keys, want 2 (enc and oct ignored)", n)
			}
			tok := func(key any, kid any) string {
				hdr := map[string]any{"kid": kid}
				return sign(t, vr.method, key, hdr, claims())
			}
			cases := []struct {
				name  string
				token string
				want  error
			}{
				{"first key", tok(vr.k1, "k1"), nil},
				{"second key", tok(vr.k2, "k2"), nil},
				{"no kid: tried against every key of the family", tok(vr.k2, nil), nil},
				{"kid names the other key", tok(vr.k1, "k2"), ErrSignature},
				{"enc key is not a signature key", tok(vr.enc, "enc1"), ErrUnknownKey},
				{"enc key without kid", tok(vr.enc, nil), ErrSignature},
				{"oct key in the JWKS is never used", sign(t, jwt.SigningMethodHS256, []byte(testSecret), map[string]any{"kid": "hmac"}, claims()), ErrAlgorithm},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					_, err := v.Verify(t.Context(), c.token)
					if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
						t.Fatalf("err = %v, want %v", err, c.want)
					}
				})
			}
		})
	}

	t.Run("mixed families: kid fixes the family", func(t *testing.T) {
		f := writeFile(t, t.TempDir(), "jwks.json", jwksDoc(
			jwkOf("r", &k.rsa1.PublicKey, nil), jwkOf("e", &k.ec1.PublicKey, nil), jwkOf("o", k.ed1.Public(), nil)))
		v := newTestVerifier(t, func(c *Config) {
			c.Algorithms, c.SecretFile, c.JWKSFile = []string{AlgRS256, AlgES256, AlgEdDSA}, "", f
		})
		for _, c := range []struct {
			m    jwt.SigningMethod
			key  any
			kid  string
			want error
		}{
			{jwt.SigningMethodRS256, k.rsa1, "r", nil},
			{jwt.SigningMethodES256, k.ec1, "e", nil},
			{jwt.SigningMethodEdDSA, k.ed1, "o", nil},
			{jwt.SigningMethodES256, k.ec1, "r", ErrAlgorithm},
			{jwt.SigningMethodEdDSA, k.ed1, "e", ErrAlgorithm},
			{jwt.SigningMethodRS256, k.rsa1, "o", ErrAlgorithm},
		} {
			_, err := v.Verify(t.Context(), sign(t, c.m, c.key, map[string]any{"kid": c.kid}, claims()))
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("%s kid %s: err = %v, want %v", c.m.Alg(), c.kid, err, c.want)
			}
		}
	})

	t.Run("rejected documents", func(t *testing.T) {
		weak, _ := rsa.GenerateKey(rand.Reader, 1024)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		bad := map[string][]byte{
			"not JSON":               []byte("<html>"),
			"no keys array":          []byte(`{"kty":"RSA"}`),
			"only enc keys":          jwksDoc(jwkOf("a", &k.rsa1.PublicKey, map[string]any{"use": "enc"})),
			"key_ops without verify": jwksDoc(jwkOf("a", &k.rsa1.PublicKey, map[string]any{"key_ops": []string{"encrypt"}})),
			"alg PS256 only":         jwksDoc(jwkOf("a", &k.rsa1.PublicKey, map[string]any{"alg": "PS256"})),
			"RSA 1024":               jwksDoc(jwkOf("a", &weak.PublicKey, nil)),
			"P-384": jwksDoc(map[string]any{"kty": "EC", "crv": "P-384", "kid": "a",
				"x": b64u(p384.X.Bytes()), "y": b64u(p384.Y.Bytes())}),
			"EC point off the curve": jwksDoc(jwkOf("a", &k.ec1.PublicKey, map[string]any{"y": b64u(pad32(k.ec1.X))})),
			"private key material":   jwksDoc(jwkOf("a", k.ed1.Public(), map[string]any{"d": b64u(k.ed1.Seed())})),
			"duplicate kid":          jwksDoc(jwkOf("a", &k.rsa1.PublicKey, nil), jwkOf("a", &k.rsa2.PublicKey, nil)),
		}
		for name, doc := range bad {
			t.Run(name, func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.Algorithms, cfg.JWKSFile = []string{AlgRS256, AlgES256, AlgEdDSA}, writeFile(t, t.TempDir(), "j.json", doc)
				if _, err := NewVerifier(t.Context(), cfg, quietLog()); err == nil {
					t.Fatal("NewVerifier accepted it")
				}
				if errs := cfg.Validate(); len(errs) == 0 {
					t.Fatal("Validate accepted it")
				}
			})
		}
	})
}

// TestPublicKeyFiles: PEM keys of each family, kid from the file name.
func TestPublicKeyFiles(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	files := []string{
		writeFile(t, dir, "idp-rsa.pem", pemPublic(t, &k.rsa1.PublicKey)),
		writeFile(t, dir, "idp-ec.pem", pemPublic(t, &k.ec1.PublicKey)),
		writeFile(t, dir, "idp-ed.pub", pemPublic(t, k.ed1.Public())),
		writeFile(t, dir, "legacy.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa2.PublicKey)})),
	}
	v := newTestVerifier(t, func(c *Config) {
		c.Algorithms, c.SecretFile, c.PublicKeyFiles = []string{AlgRS256, AlgES256, AlgEdDSA}, "", files
	})
	for _, c := range []struct {
		m    jwt.SigningMethod
		key  any
		kid  any
		want error
	}{
		{jwt.SigningMethodRS256, k.rsa1, "idp-rsa", nil},
		{jwt.SigningMethodES256, k.ec1, "idp-ec", nil},
		{jwt.SigningMethodEdDSA, k.ed1, "idp-ed", nil},
		{jwt.SigningMethodRS256, k.rsa2, "legacy", nil},
		{jwt.SigningMethodRS256, k.rsa2, nil, nil},
		{jwt.SigningMethodRS256, k.rsa3, nil, ErrSignature},
		{jwt.SigningMethodRS256, k.rsa1, "idp-rsa.pem", ErrUnknownKey},
		{jwt.SigningMethodES256, k.ec1, "idp-rsa", ErrAlgorithm},
	} {
		_, err := v.Verify(t.Context(), sign(t, c.m, c.key, map[string]any{"kid": c.kid}, claims()))
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s kid %v: err = %v, want %v", c.m.Alg(), c.kid, err, c.want)
		}
	}

	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	privDER, _ := x509.MarshalPKCS8PrivateKey(k.ec1)
	bad := []struct {
		name, want string
		data       []byte
	}{
		{"private key", "private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})},
		{"RSA 1024", "at least 2048", pemPublic(t, &weak.PublicKey)},
		{"P-384", "P-256", pemPublic(t, &p384.PublicKey)},
		{"two blocks", "more than one", append(pemPublic(t, &k.rsa1.PublicKey), pemPublic(t, &k.rsa2.PublicKey)...)},
		{"not PEM", "no PEM block", []byte("ssh-ed25519 AAAA")},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Algorithms = []string{AlgRS256, AlgES256}
			cfg.PublicKeyFiles = []string{writeFile(t, t.TempDir(), "k.pem", b.data)}
			errs := cfg.Validate()
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), b.want) {
				t.Fatalf("Validate = %v, want one error mentioning %q", errs, b.want)
			}
		})
	}
	t.Run("same kid from two files", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Algorithms = []string{AlgRS256}
		cfg.PublicKeyFiles = []string{
			writeFile(t, t.TempDir(), "idp.pem", pemPublic(t, &k.rsa1.PublicKey)),
			writeFile(t, t.TempDir(), "idp.pub", pemPublic(t, &k.rsa2.PublicKey)),
		}
		if errs := cfg.Validate(); len(errs) != 1 || !strings.Contains(errs[0].Error(), `kid "idp"`) {
			t.Fatalf("Validate = %v", errs)
		}
	})
}
