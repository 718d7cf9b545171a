// Package auth verifies and mints the JWTs of the HTTP plane. Browser agents and admins carry
// one; the WebSocket bridge later takes the verified subject as the agent's SIP identity, so
// every check here fails closed: an explicit algorithm allowlist, keys chosen by algorithm
// family (an HMAC token is never checked against public-key bytes), required exp, exact iss
// and aud, and a size cap before any parsing. Tokens and secrets are never logged.
package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// The algorithms a deployment may allow. Each names one key family, which is what keeps a
// token's own header from choosing how it is checked.
const (
	AlgHS256 = "HS256"
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
	AlgEdDSA = "EdDSA"
)

var supportedAlgs = []string{AlgHS256, AlgRS256, AlgES256, AlgEdDSA}

const (
	// minSecretBytes is the HS256 key floor: a shorter secret is within reach of offline
	// brute force from a single captured token (RFC 7518 §3.2 asks for at least the hash size).
	minSecretBytes = 32
	// maxKeyFileBytes bounds what is read from a key, secret or JWKS file or URL, so a wrong
	// path (a log, a device) cannot exhaust memory.
	maxKeyFileBytes = 1 << 20
	// minRefetchInterval is the floor between JWKS fetches triggered by unknown kids, so tokens
	// naming random kids cannot turn the gateway into a load generator against the IdP.
	minRefetchInterval = 30 * time.Second
	// maxLeeway and maxTTL keep clock-skew tolerance and token lifetime in a range where a
	// stolen token stays short-lived: there is no revocation list.
	maxLeeway = 5 * time.Minute
	maxTTL    = 24 * time.Hour
	// maxSessionCap bounds max_session: a week covers any shift pattern, and beyond it a
	// stolen cookie that keeps being refreshed would outlive most password rotations.
	maxSessionCap = 7 * 24 * time.Hour
)

// Config is the `http.jwt` section of the gateway config. Paths are used as given: the
// composition root resolves them against the config file's directory.
type Config struct {
	// Algorithms is the explicit allowlist of signing algorithms; a token whose header names
	// anything else is refused before its key is looked up. Allowed values: HS256, RS256,
	// ES256, EdDSA ("none" never). Default [HS256].
	Algorithms []string `yaml:"algorithms"`
	// SecretFile holds the HS256 secret (at least 32 bytes; one trailing newline is trimmed).
	// Default none.
	SecretFile string `yaml:"secret_file"`
	// SecretEnv names an environment variable holding the HS256 secret, for deployments that
	// inject secrets that way. Exclusive with SecretFile. Default none.
	SecretEnv string `yaml:"secret_env"`
	// EphemeralSecret makes a random HS256 secret when the gateway starts instead of reading
	// one: for local development only (the embedded default config). Tokens die with the
	// process and several gateway instances cannot share them. Exclusive with secret_file and
	// secret_env. Default false.
	EphemeralSecret bool `yaml:"ephemeral_secret"`
	// ephemeral holds that secret once WithEphemeralSecret made it, so the verifier and the
	// signer built from this config share it.
	ephemeral []byte
	// PublicKeyFiles are PEM public keys (RSA of at least 2048 bits, ECDSA P-256, Ed25519).
	// Each key's kid is its file name without the extension. Default none.
	PublicKeyFiles []string `yaml:"public_key_files"`
	// JWKSFile is a JWKS document on disk, for an IdP whose keys are copied out of band.
	// Default none.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL is the IdP's JWKS endpoint (https; plain http only to a loopback host). The
	// document is fetched at start, refreshed every JWKSRefresh, and re-fetched at once (at
	// most every 30 s) when a token names an unknown kid, which is how key rotation is
	// followed. Exactly one of PublicKeyFiles, JWKSFile and JWKSURL may be set. Default none.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefresh is the periodic refresh of JWKSURL. Default 10m, at least 30s.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// Issuer is the exact iss every token must carry. Default "dualgate".
	Issuer string `yaml:"issuer"`
	// Audience must be one of the token's aud values, exactly. Default "dualgate".
	Audience string `yaml:"audience"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default 30s, at most 5m.
	Leeway time.Duration `yaml:"leeway"`
	// MaxTokenBytes refuses longer tokens before any decoding, so parsing cost stays bounded
	// whatever a client sends. Default 4096.
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// CookieName is the cookie browsers carry the token in (a WebSocket upgrade cannot set an
	// Authorization header). Default "dualgate_session".
	CookieName string `yaml:"cookie_name"`
	// TTL is the lifetime of the tokens the embedded login mints. Default 1h, at most 24h.
	TTL time.Duration `yaml:"ttl"`
	// MaxSession is the absolute lifetime of an embedded-login session: POST /api/refresh
	// mints tokens for the same session only until this long after the password login, so a
	// stolen cookie cannot be refreshed forever. Default 12h; between ttl and 168h.
	MaxSession time.Duration `yaml:"max_session"`
}

// DefaultConfig is what the YAML section is decoded over. It names no key source, so it does
// not validate on its own: a deployment must say where its HS256 secret or public keys are.
func DefaultConfig() Config {
	return Config{
		Algorithms:    []string{AlgHS256},
		JWKSRefresh:   10 * time.Minute,
		Issuer:        "dualgate",
		Audience:      "dualgate",
		Leeway:        30 * time.Second,
		MaxTokenBytes: 4096,
		CookieName:    "dualgate_session",
		TTL:           time.Hour,
		MaxSession:    12 * time.Hour,
	}
}

// Validate reports every problem at once, so `dualgate check` can list them in one pass. It
// reads the secret and the key files (never the JWKS URL) because a key that does not parse is
// a config error like any other. No message contains secret material.
func (c Config) Validate() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if len(c.Algorithms) == 0 {
		add("algorithms: empty; list at least one of %s", strings.Join(supportedAlgs, ", "))
	}
	seen := map[string]bool{}
	for _, a := range c.Algorithms {
		switch {
		case strings.EqualFold(a, "none"):
			add(`algorithms: "none" is never allowed: it means unsigned tokens`)
		case !slices.Contains(supportedAlgs, a):
			add("algorithms: %q is not supported (allowed: %s)", a, strings.Join(supportedAlgs, ", "))
		case seen[a]:
			add("algorithms: %q is listed twice", a)
		}
		seen[a] = true
	}
	wantHMAC := seen[AlgHS256]
	wantPublic := seen[AlgRS256] || seen[AlgES256] || seen[AlgEdDSA]

	// Key sources.
	if c.SecretFile != "" && c.SecretEnv != "" {
		add("secret_file and secret_env are both set; choose one")
	}
	if c.EphemeralSecret && (c.SecretFile != "" || c.SecretEnv != "") {
		add("ephemeral_secret excludes secret_file and secret_env")
	}
	hasSecret := c.SecretFile != "" || c.SecretEnv != "" || c.EphemeralSecret
	if c.SecretFile != "" || c.SecretEnv != "" {
		if _, err := loadSecret(c); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case wantHMAC && !hasSecret:
		add("algorithms allow HS256 but no secret_file, secret_env or ephemeral_secret is set")
	case hasSecret && !wantHMAC && len(c.Algorithms) > 0:
		add("an HS256 secret is configured but HS256 is not in algorithms")
	}

	sources := 0
	for _, set := range []bool{len(c.PublicKeyFiles) > 0, c.JWKSFile != "", c.JWKSURL != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		add("public_key_files, jwks_file and jwks_url are exclusive; set one")
	}
	switch {
	case wantPublic && sources == 0:
		add("algorithms allow %s but no public_key_files, jwks_file or jwks_url is set", publicAlgs(c.Algorithms))
	case sources > 0 && !wantPublic && len(c.Algorithms) > 0:
		add("public keys are configured but algorithms allow none of RS256, ES256, EdDSA")
	}
	if len(c.PublicKeyFiles) > 0 {
		var algs []string // when no public algorithm is allowed, that is reported once above
		if wantPublic {
			algs = c.Algorithms
		}
		if _, err := loadPEMFiles(c.PublicKeyFiles, algs); err != nil {
			errs = append(errs, err)
		}
	}
	if c.JWKSFile != "" {
		var algs []string
		if wantPublic {
			algs = c.Algorithms
		}
		if _, err := loadJWKSFile(c.JWKSFile, algs, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			errs = append(errs, err)
		}
		if c.JWKSRefresh < minRefetchInterval {
			add("jwks_refresh %v: at least %v", c.JWKSRefresh, minRefetchInterval)
		}
	}

	// Claims and transport.
	if c.Issuer == "" {
		add("issuer: empty; tokens from any issuer would be accepted")
	}
	if c.Audience == "" {
		add("audience: empty; tokens meant for other services would be accepted")
	}
	if c.Leeway < 0 || c.Leeway > maxLeeway {
		add("leeway %v: between 0 and %v", c.Leeway, maxLeeway)
	}
	if c.MaxTokenBytes < 256 || c.MaxTokenBytes > 64<<10 {
		add("max_token_bytes %d: between 256 and 65536", c.MaxTokenBytes)
	}
	if !validCookieName(c.CookieName) {
		add("cookie_name %q: must be a non-empty RFC 6265 token", c.CookieName)
	}
	if c.TTL <= 0 || c.TTL > maxTTL {
		add("ttl %v: between 1s and %v (minted tokens cannot be revoked)", c.TTL, maxTTL)
	}
	ttlOK := c.TTL > 0 && c.TTL <= maxTTL // a bad ttl is reported once, above
	if (ttlOK && c.MaxSession < c.TTL) || c.MaxSession > maxSessionCap {
		add("max_session %v: between ttl (%v) and %v", c.MaxSession, c.TTL, maxSessionCap)
	}
	return errs
}

func publicAlgs(algs []string) string {
	var out []string
	for _, a := range algs {
		if a != AlgHS256 && slices.Contains(supportedAlgs, a) {
			out = append(out, a)
		}
	}
	return strings.Join(out, ", ")
}

// loadSecret returns nil, nil when no secret is configured.
// WithEphemeralSecret returns the config with its development secret made, when
// ephemeral_secret asks for one; otherwise the config unchanged.
func (c Config) WithEphemeralSecret() (Config, error) {
	if !c.EphemeralSecret || len(c.ephemeral) > 0 {
		return c, nil
	}
	c.ephemeral = make([]byte, 48)
	if _, err := rand.Read(c.ephemeral); err != nil {
		return c, fmt.Errorf("make ephemeral secret: %w", err)
	}
	return c, nil
}

func loadSecret(c Config) ([]byte, error) {
	var raw []byte
	var where string
	switch {
	case c.EphemeralSecret:
		if len(c.ephemeral) == 0 {
			return nil, errors.New("ephemeral_secret: the secret was not made (WithEphemeralSecret)")
		}
		return c.ephemeral, nil
	case c.SecretFile != "":
		where = "secret_file " + c.SecretFile
		b, err := readLimited(c.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		raw = b
	case c.SecretEnv != "":
		where = "secret_env " + c.SecretEnv
		v, ok := os.LookupEnv(c.SecretEnv)
		if !ok {
			return nil, fmt.Errorf("%s: the variable is not set", where)
		}
		raw = []byte(v)
	default:
		return nil, nil
	}
	// Editors and `echo >` leave a newline; it is never meant as key material.
	raw = []byte(strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r"))
	if len(raw) < minSecretBytes {
		return nil, fmt.Errorf("%s: the HS256 secret is %d bytes, it must be at least %d (generate one with `openssl rand -base64 48`)",
			where, len(raw), minSecretBytes)
	}
	return raw, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimited(f)
}

func readAllLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileBytes)
	}
	return b, nil
}

// checkJWKSURL allows plain http only to loopback: anywhere else an on-path attacker could
// serve their own keys and mint any identity.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("jwks_url: %v", err)
	}
	if u.Host == "" {
		return fmt.Errorf("jwks_url %q: no host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("jwks_url: credentials in the URL are not supported")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("jwks_url %s: plain http is allowed only to a loopback host; use https", redactURL(u))
	default:
		return fmt.Errorf("jwks_url %s: scheme must be https", redactURL(u))
	}
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// redactURL keeps the query out of logs and errors: some IdPs put keys or tenants there.
func redactURL(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.Path
}

func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
