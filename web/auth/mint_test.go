package auth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func pemPrivate(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Under jwks_url the key cannot be checked offline; the token carries the kid given, and the
// verifier fetching the IdP's document accepts it when the document has that key.
func TestMinterUnderJWKSURL(t *testing.T) {
	k := testKeys()
	p := newIDP(t, jwksDoc(jwkOf("ec-9", k.ec1.Public(), nil), jwkOf("ec-8", k.ec2.Public(), nil)))
	cfg := DefaultConfig()
	cfg.Algorithms, cfg.JWKSURL = []string{AlgES256}, p.srv.URL
	keyFile := writeFile(t, t.TempDir(), "ec.pem", pemPrivate(t, k.ec1))

	m, err := NewMinter(cfg, keyFile, "ec-9")
	if err != nil {
		t.Fatal(err)
	}
	if m.Checked() || m.Kid() != "ec-9" || m.Algorithm() != AlgES256 {
		t.Errorf("checked %v kid %q alg %s", m.Checked(), m.Kid(), m.Algorithm())
	}
	if hits := p.hits.Load(); hits != 0 {
		t.Errorf("NewMinter fetched the JWKS %d times", hits)
	}
	tok, exp, err := m.Mint("svc", []string{RoleAdmin}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := urlVerifier(t, p.srv.URL, testHooks{})
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("verifier refused the minted token: %v", err)
	}
	if c.Subject != "svc" || !slices.Equal(c.Roles, []string{RoleAdmin}) || !c.ExpiresAt.Equal(exp) {
		t.Errorf("claims %+v, exp %v", c, exp)
	}
	// With the kid of another key in the document the signature does not match.
	wrong, err := NewMinter(cfg, keyFile, "ec-8")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err = wrong.Mint("svc", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrSignature) {
		t.Errorf("token under the wrong kid: %v, want %v", err, ErrSignature)
	}
}

func TestMinterHS256MatchesTheVerifier(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret+"\n"))
	m, err := NewMinter(cfg, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !m.Checked() || m.Kid() != "" || m.Algorithm() != AlgHS256 {
		t.Errorf("checked %v kid %q alg %s", m.Checked(), m.Kid(), m.Algorithm())
	}
	tok, exp, err := m.Mint("1001", nil, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newTestVerifier(t, func(c *Config) { c.SecretFile = cfg.SecretFile }).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "1001" || len(c.Roles) != 0 || c.Roles == nil || !c.ExpiresAt.Equal(exp) {
		t.Errorf("claims %+v", c)
	}
	for _, ttl := range []time.Duration{0, 500 * time.Millisecond, 25 * time.Hour} {
		if _, _, err := m.Mint("1001", nil, ttl); err == nil || !strings.Contains(err.Error(), "between 1s and 24h") {
			t.Errorf("ttl %v: %v", ttl, err)
		}
	}
	if _, err := NewMinter(cfg, "", "k1"); err == nil || !strings.Contains(err.Error(), "HS256 token has none") {
		t.Errorf("kid with HS256: %v", err)
	}
}

func TestMinterRefusesWhatCannotSign(t *testing.T) {
	k := testKeys()
	dir := t.TempDir()
	pub := writeFile(t, dir, "ec.pem", pemPublic(t, k.ec1.Public()))
	cfg := DefaultConfig()
	cfg.Algorithms, cfg.PublicKeyFiles = []string{AlgES256}, []string{pub}
	if _, err := NewMinter(cfg, "", ""); !errors.Is(err, ErrCannotMint) || !strings.Contains(err.Error(), "public_key_files") {
		t.Errorf("public keys only: %v", err)
	}
	eph := DefaultConfig()
	eph.EphemeralSecret = true
	if _, err := NewMinter(eph, "", ""); !errors.Is(err, ErrCannotMint) || !strings.Contains(err.Error(), "ephemeral_secret") {
		t.Errorf("ephemeral secret: %v", err)
	}
	enc := writeFile(t, dir, "enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	if _, err := NewMinter(cfg, enc, ""); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Errorf("encrypted key: %v", err)
	}
	bad := DefaultConfig() // no key source at all: a config error, reported as such
	if _, err := NewMinter(bad, "", ""); err == nil || !strings.Contains(err.Error(), "no secret_file") {
		t.Errorf("invalid config: %v", err)
	}
}
