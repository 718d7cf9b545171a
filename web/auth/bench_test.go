package auth

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// The HTTP plane reports these as "JWT verification cost per request".

func BenchmarkVerifyHS256(b *testing.B) {
	v := newTestVerifier(b, nil)
	tok := sign(b, jwt.SigningMethodHS256, []byte(testSecret), nil, claims())
	benchVerify(b, v, tok)
}

func BenchmarkVerifyES256(b *testing.B) {
	k := testKeys()
	f := writeFile(b, b.TempDir(), "jwks.json", jwksDoc(jwkOf("e1", &k.ec1.PublicKey, nil)))
	v := newTestVerifier(b, func(c *Config) { c.Algorithms, c.SecretFile, c.JWKSFile = []string{AlgES256}, "", f })
	tok := sign(b, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "e1"}, claims())
	benchVerify(b, v, tok)
}

func benchVerify(b *testing.B, v *Verifier, tok string) {
	ctx := b.Context()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
