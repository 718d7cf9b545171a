package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestValidateReportsEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Algorithms:     []string{"HS256", "none", "HS512", "HS256", "RS256"},
		SecretFile:     writeFile(t, dir, "secret", []byte("short\n")),
		SecretEnv:      "DUALGATE_TEST_UNSET",
		PublicKeyFiles: []string{dir + "/missing.pem"},
		JWKSURL:        "http://idp.example.com/jwks",
		JWKSRefresh:    time.Second,
		Leeway:         time.Hour,
		MaxTokenBytes:  0,
		CookieName:     "bad name;",
		TTL:            0,
	}
	want := []string{
		`"none" is never allowed`,
		`"HS512" is not supported`,
		`"HS256" is listed twice`,
		"secret_file and secret_env are both set",
		"must be at least 32",
		"exclusive",
		"missing.pem",
		"plain http is allowed only to a loopback host",
		"jwks_refresh 1s",
		"issuer: empty",
		"audience: empty",
		"leeway 1h0m0s",
		"max_token_bytes 0",
		"cookie_name",
		"ttl 0s",
	}
	errs := cfg.Validate()
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	joined := strings.Join(all, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("no error mentions %q", w)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(errs), len(want), joined)
	}
	if strings.Contains(joined, "short") {
		t.Error("an error quotes the secret")
	}
}

func TestValidateCases(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", []byte(testSecret))
	k := testKeys()
	pub := writeFile(t, dir, "k.pem", pemPublic(t, &k.rsa1.PublicKey))
	base := func(edit func(*Config)) Config {
		c := DefaultConfig()
		c.SecretFile = secret
		edit(&c)
		return c
	}
	cases := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"defaults plus a secret", base(func(*Config) {}), ""},
		{"defaults alone name no key", DefaultConfig(), "no secret_file, secret_env or ephemeral_secret"},
		{"secret of exactly 32 bytes", base(func(c *Config) { c.SecretFile = writeFile(t, dir, "s32", []byte(strings.Repeat("k", 32)+"\n")) }), ""},
		{"secret of 31 bytes plus newline", base(func(c *Config) { c.SecretFile = writeFile(t, dir, "s31", []byte(strings.Repeat("k", 31)+"\n")) }), "31 bytes, it must be at least 32"},
		{"secret file missing", base(func(c *Config) { c.SecretFile = dir + "/nope" }), "nope"},
		{"secret env unset", base(func(c *Config) { c.SecretFile, c.SecretEnv = "", "DUALGATE_TEST_SURELY_UNSET" }), "not set"},
		{"empty algorithms", base(func(c *Config) { c.Algorithms = nil }), "algorithms: empty"},
		{"RS256 without keys", base(func(c *Config) { c.Algorithms = []string{"HS256", "RS256"} }), "no public_key_files"},
		{"secret without HS256", base(func(c *Config) { c.Algorithms, c.PublicKeyFiles = []string{"RS256"}, []string{pub} }), "HS256 is not in algorithms"},
		{"public keys without a public algorithm", base(func(c *Config) { c.PublicKeyFiles = []string{pub} }), "allow none of RS256"},
		{"ES256 only but an RSA key", base(func(c *Config) { c.SecretFile, c.Algorithms, c.PublicKeyFiles = "", []string{"ES256"}, []string{pub} }), "do not allow RS256"},
		{"https JWKS", base(func(c *Config) {
			c.SecretFile, c.Algorithms, c.JWKSURL = "", []string{"RS256"}, "https://idp.example.com/.well-known/jwks.json"
		}), ""},
		{"loopback http JWKS", base(func(c *Config) {
			c.SecretFile, c.Algorithms, c.JWKSURL = "", []string{"RS256"}, "http://[::1]:8081/jwks"
		}), ""},
		{"ftp JWKS", base(func(c *Config) { c.SecretFile, c.Algorithms, c.JWKSURL = "", []string{"RS256"}, "ftp://idp/jwks" }), "scheme must be https"},
		{"credentials in JWKS URL", base(func(c *Config) { c.SecretFile, c.Algorithms, c.JWKSURL = "", []string{"RS256"}, "https://u:p@idp/jwks" }), "credentials"},
		{"negative leeway", base(func(c *Config) { c.Leeway = -time.Second }), "leeway"},
		{"TTL over a day", base(func(c *Config) { c.TTL = 48 * time.Hour }), "ttl"},
		{"max_session below ttl", base(func(c *Config) { c.TTL, c.MaxSession = 2*time.Hour, time.Hour }), "max_session 1h0m0s"},
		{"max_session over a week", base(func(c *Config) { c.MaxSession = 200 * time.Hour }), "max_session 200h0m0s"},
		{"max_session equal to ttl", base(func(c *Config) { c.TTL, c.MaxSession = 2*time.Hour, 2*time.Hour }), ""},
		{"huge max_token_bytes", base(func(c *Config) { c.MaxTokenBytes = 1 << 20 }), "max_token_bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := c.cfg.Validate()
			if c.want == "" {
				if len(errs) != 0 {
					t.Fatalf("unexpected errors: %v", errs)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), c.want) {
				t.Fatalf("errors = %v, want one mentioning %q", errs, c.want)
			}
		})
	}
}

func TestSecretSources(t *testing.T) {
	t.Setenv("DUALGATE_TEST_JWT_SECRET", testSecret)
	cfg := DefaultConfig()
	cfg.SecretEnv = "DUALGATE_TEST_JWT_SECRET"
	v, err := NewVerifier(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims())); err != nil {
		t.Fatalf("secret from env: %v", err)
	}
	// The trailing newline of a secret file is not part of the key.
	v = newTestVerifier(t, nil) // writes testSecret + "\n"
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, []byte(testSecret+"\n"), nil, claims())); err == nil {
		t.Fatal("the newline was kept as key material")
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims())); err != nil {
		t.Fatalf("secret from file: %v", err)
	}

	t.Setenv("DUALGATE_TEST_JWT_SECRET", "short")
	if _, err := NewVerifier(t.Context(), cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("short env secret: %v", err)
	}
}

func TestEphemeralSecret(t *testing.T) {
	c := DefaultConfig()
	c.EphemeralSecret = true
	if errs := c.Validate(); len(errs) != 0 {
		t.Fatalf("ephemeral secret config invalid: %v", errs)
	}
	if _, err := NewSigner(c); err == nil {
		t.Fatal("a signer was built before the ephemeral secret was made")
	}
	c1, err := c.WithEphemeralSecret()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := NewSigner(c1)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := signer.Mint("1001", []string{RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(t.Context(), c1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Errorf("verifier and signer from one resolved config disagree: %v", err)
	}
	// Another start makes another secret: old tokens die with the process.
	c2, _ := c.WithEphemeralSecret()
	v2, err := NewVerifier(t.Context(), c2, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Verify(t.Context(), tok); err == nil {
		t.Error("a token survived into a new ephemeral secret")
	}
	bad := c
	bad.SecretEnv = "X"
	if errs := bad.Validate(); len(errs) == 0 {
		t.Error("ephemeral_secret together with secret_env accepted")
	}
}
