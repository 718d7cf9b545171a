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

// Renew keeps the session (sid, auth_time) and caps every renewed token at auth_time +
// max_session, the session's absolute end.
func TestSignerRenewBoundsTheSession(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret))
	cfg.TTL, cfg.MaxSession = time.Hour, 8*time.Hour
	cfg.Leeway = 0
	s, err := NewSigner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	// The verifier checks exp against the real clock, so the login token is minted at the real
	// now; after that only the signer's clock moves, renewing from the verified claims.
	login := time.Now().Truncate(time.Second)
	s.now = func() time.Time { return login }
	tok, _, err := s.Mint("alice", []string{RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionID == "" || !c.AuthTime.Equal(login) {
		t.Fatalf("login token session: sid %q auth_time %v, want a sid and %v", c.SessionID, c.AuthTime, login)
	}

	s.now = func() time.Time { return login.Add(30 * time.Minute) }
	tok2, exp2, err := s.Renew(c, []string{RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	// Issued half an hour in the future by the real clock: read, not verified.
	var c2 tokenClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok2, &c2); err != nil {
		t.Fatal(err)
	}
	if c2.SessionID != c.SessionID || !c2.AuthTime.Equal(login) || c2.ID == c.ID ||
		!c2.ExpiresAt.Equal(login.Add(90*time.Minute)) || !exp2.Equal(c2.ExpiresAt.Time) {
		t.Fatalf("renewed: %+v exp %v", c2, exp2)
	}

	// Near the session's end the token is cut short to it; at the end there is no renewal.
	s.now = func() time.Time { return login.Add(7*time.Hour + 30*time.Minute) }
	if _, exp, err := s.Renew(c, []string{RoleAgent}); err != nil || !exp.Equal(login.Add(8*time.Hour)) {
		t.Fatalf("renew half an hour before the end: exp %v, %v; want %v", exp, err, login.Add(8*time.Hour))
	}
	for _, at := range []time.Duration{8 * time.Hour, 30 * time.Hour} {
		s.now = func() time.Time { return login.Add(at) }
		if _, _, err := s.Renew(c, []string{RoleAgent}); !errors.Is(err, ErrSessionOver) {
			t.Errorf("renew %v after login: %v, want ErrSessionOver", at, err)
		}
	}

	// No session in the token: nothing to renew.
	s.now = time.Now
	for _, bad := range []*Claims{nil, {Subject: "alice", AuthTime: login}, {Subject: "alice", SessionID: "x"},
		{Subject: "alice", SessionID: "x", AuthTime: time.Now().Add(time.Hour)}} {
		if _, _, err := s.Renew(bad, nil); !errors.Is(err, ErrNotRenewable) {
			t.Errorf("Renew(%+v): %v, want ErrNotRenewable", bad, err)
		}
	}
}

// A sid that could not serve as a key (control characters, huge) makes the token invalid.
func TestVerifyRefusesBadSessionID(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret))
	v, err := NewVerifier(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, sid := range []string{"a\nb", strings.Repeat("s", 300)} {
		mc := claims()
		mc["sid"] = sid
		if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, mc)); !errors.Is(err, ErrClaims) {
			t.Errorf("sid %q: %v, want ErrClaims", sid[:min(len(sid), 8)], err)
		}
	}
	mc := claims()
	mc["sid"], mc["auth_time"] = "ok-sid", time.Now().Unix()
	c, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, mc))
	if err != nil || c.SessionID != "ok-sid" || c.AuthTime.IsZero() || c.Algorithm != AlgHS256 {
		t.Errorf("good sid: %+v %v", c, err)
	}
}
