package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestSignerRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret+"\n"))
	cfg.TTL = 15 * time.Minute
	s, err := NewSigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	tok, exp, err := s.Mint("alice", []string{RoleAgent, RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if d := exp.Sub(before); d < 15*time.Minute-time.Second || d > 15*time.Minute+time.Second {
		t.Fatalf("expires in %v, want the configured 15m", d)
	}
	c, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if c.Subject != "alice" || !c.HasRole(RoleAgent) || !c.HasRole(RoleAdmin) || !c.ExpiresAt.Equal(exp) || c.ID == "" {
		t.Fatalf("claims = %+v, expires %v", c, exp)
	}

	// Every registered claim the brief lists is present.
	var mc jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &mc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"iss", "aud", "sub", "roles", "iat", "nbf", "exp", "jti"} {
		if _, ok := mc[name]; !ok {
			t.Errorf("minted token lacks %s", name)
		}
	}

	tok2, _, _ := s.Mint("alice", nil)
	c2, err := v.Verify(t.Context(), tok2)
	if err != nil {
		t.Fatalf("token minted with nil roles: %v", err)
	}
	if c2.ID == c.ID {
		t.Fatal("jti repeats")
	}
	if c2.HasRole(RoleAgent) {
		t.Fatal("nil roles granted a role")
	}

	// The round trip depends on the shared secret (the check can fail).
	other := cfg
	other.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(strings.ToUpper(testSecret)))
	ov, err := NewVerifier(t.Context(), other, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ov.Verify(t.Context(), tok); !errors.Is(err, ErrSignature) {
		t.Fatalf("verified under another secret: %v", err)
	}
}

func TestSignerRefuses(t *testing.T) {
	k := testKeys()
	pub := writeFile(t, t.TempDir(), "idp.pem", pemPublic(t, &k.rsa1.PublicKey))
	cfg := DefaultConfig()
	cfg.Algorithms, cfg.PublicKeyFiles = []string{AlgRS256}, []string{pub}
	if _, err := NewSigner(cfg); err == nil || !strings.Contains(err.Error(), "HS256 secret") || !strings.Contains(err.Error(), "identity provider") {
		t.Fatalf("public keys only: err = %v", err)
	}
	if _, err := NewSigner(DefaultConfig()); err == nil || !strings.Contains(err.Error(), "HS256 secret") {
		t.Fatalf("no key at all: err = %v", err)
	}
	short := DefaultConfig()
	short.SecretFile = writeFile(t, t.TempDir(), "secret", []byte("too-short"))
	if _, err := NewSigner(short); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short secret: err = %v", err)
	}

	ok := DefaultConfig()
	ok.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret))
	s, err := NewSigner(ok)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"", "a\nb", strings.Repeat("x", 300)} {
		if _, _, err := s.Mint(sub, nil); err == nil {
			t.Errorf("Mint(%q) succeeded", sub)
		}
	}
	many := make([]string, 500)
	for i := range many {
		many[i] = "role-with-a-long-name"
	}
	if _, _, err := s.Mint("alice", many); !errors.Is(err, ErrTokenTooLarge) {
		t.Errorf("Mint of a token over max_token_bytes: %v", err)
	}
}
