package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrCannotMint says the configuration holds no key that can sign: only public keys, or a
// secret that exists only inside the running gateway.
var ErrCannotMint = errors.New("cannot mint tokens from this configuration")

// Minter mints tokens for operators and API clients (`dualgate token`) that the Verifier built
// from the same Config accepts: with the HS256 secret, or with a private key whose public half
// the config lists. Unlike Signer, the lifetime is chosen per token.
type Minter struct {
	alg      string
	method   jwt.SigningMethod
	key      any // []byte for HS256, else a crypto.Signer
	kid      string
	checked  bool // the key is known to be one the config verifies with
	issuer   string
	audience string
	maxBytes int
	now      func() time.Time
}

// NewMinter validates cfg and picks the signing key. With privateKeyFile empty it uses the
// HS256 secret (secret_file or secret_env); a config with only public keys, or with the
// per-process ephemeral secret, is refused with ErrCannotMint. With a private key file (PEM:
// PKCS #8, PKCS #1 RSA or SEC 1 EC) the key's algorithm must be allowed and its public half
// must be among public_key_files or in jwks_file; the token's kid is that key's. With jwks_url
// the key cannot be checked offline: kid is used as given, and Checked reports false.
func NewMinter(cfg Config, privateKeyFile, kid string) (*Minter, error) {
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	m := &Minter{issuer: cfg.Issuer, audience: cfg.Audience, maxBytes: cfg.MaxTokenBytes, now: time.Now}
	publicSource := ""
	switch {
	case len(cfg.PublicKeyFiles) > 0:
		publicSource = "public_key_files"
	case cfg.JWKSFile != "":
		publicSource = "jwks_file"
	case cfg.JWKSURL != "":
		publicSource = "jwks_url"
	}

	if privateKeyFile == "" {
		if kid != "" {
			return nil, errors.New("a kid names a public key; an HS256 token has none")
		}
		switch {
		case cfg.EphemeralSecret:
			return nil, fmt.Errorf("%w: ephemeral_secret is a random secret that only the running gateway "+
				"knows; set secret_file or secret_env to mint tokens outside it", ErrCannotMint)
		case cfg.SecretFile == "" && cfg.SecretEnv == "":
			return nil, fmt.Errorf("%w: it has only public keys (%s), which verify tokens but cannot sign "+
				"them; give the matching private key, or get tokens from the identity provider", ErrCannotMint, publicSource)
		}
		secret, err := loadSecret(cfg)
		if err != nil {
			return nil, err
		}
		m.alg, m.method, m.key, m.checked = AlgHS256, jwt.SigningMethodHS256, secret, true
		return m, nil
	}

	priv, err := loadPrivateKey(privateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", privateKeyFile, err)
	}
	alg, _, err := algForKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", privateKeyFile, err)
	}
	if !slices.Contains(cfg.Algorithms, alg) {
		return nil, fmt.Errorf("private key %s is an %s key, but algorithms allow only %s", privateKeyFile, alg,
			strings.Join(cfg.Algorithms, ", "))
	}
	m.alg, m.key = alg, priv
	switch alg {
	case AlgRS256:
		m.method = jwt.SigningMethodRS256
	case AlgES256:
		m.method = jwt.SigningMethodES256
	case AlgEdDSA:
		m.method = jwt.SigningMethodEdDSA
	}

	var known []pubKey
	switch publicSource {
	case "public_key_files":
		known, err = loadPEMFiles(cfg.PublicKeyFiles, cfg.Algorithms)
	case "jwks_file":
		known, err = loadJWKSFile(cfg.JWKSFile, cfg.Algorithms, nil)
	case "jwks_url":
		m.kid = kid // fetched by the gateway; not checked here
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	pub, ok := priv.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("private key %s: its public key cannot be compared", privateKeyFile)
	}
	for _, k := range known {
		if k.alg != alg || !pub.Equal(k.key) {
			continue
		}
		if kid != "" && kid != k.kid {
			return nil, fmt.Errorf("private key %s matches the configured key with kid %q, not %q", privateKeyFile, k.kid, kid)
		}
		m.kid, m.checked = k.kid, true
		return m, nil
	}
	return nil, fmt.Errorf("private key %s: its public half is not among the configured %s, so the gateway would "+
		"refuse tokens signed with it", privateKeyFile, publicSource)
}

// Algorithm is the algorithm tokens are signed with.
func (m *Minter) Algorithm() string { return m.alg }

// Kid is the kid tokens carry in their header, "" for none.
func (m *Minter) Kid() string { return m.kid }

// Checked reports whether the key is known to be one the gateway verifies with (false only
// for a private key under jwks_url, whose document is not fetched here).
func (m *Minter) Checked() bool { return m.checked }

// Mint returns a token for subject with roles, valid for ttl (at most 24 h: tokens cannot be
// revoked), and its expiry.
func (m *Minter) Mint(subject string, roles []string, ttl time.Duration) (token string, expires time.Time, err error) {
	if err := checkSubject(subject); err != nil {
		return "", time.Time{}, err
	}
	if ttl < time.Second || ttl > maxTTL {
		return "", time.Time{}, fmt.Errorf("ttl %v: between 1s and %v (tokens cannot be revoked)", ttl, maxTTL)
	}
	if roles == nil {
		roles = []string{} // the verifier wants an array, never null
	}
	now := m.now().Truncate(time.Second)
	expires = now.Add(ttl.Truncate(time.Second))
	t := jwt.NewWithClaims(m.method, &tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    m.issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{m.audience},
			ExpiresAt: jwt.NewNumericDate(expires),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        rand.Text(),
		},
		Roles: roleList(slices.Clone(roles)),
	})
	if m.kid != "" {
		t.Header["kid"] = m.kid
	}
	token, err = t.SignedString(m.key)
	if err != nil {
		return "", time.Time{}, err
	}
	if len(token) > m.maxBytes {
		return "", time.Time{}, fmt.Errorf("%w: minted token is %d bytes, max_token_bytes is %d", ErrTokenTooLarge, len(token), m.maxBytes)
	}
	return token, expires, nil
}

// loadPrivateKey reads one unencrypted PEM private key.
func loadPrivateKey(path string) (crypto.Signer, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("more than one PEM block; give one key per file")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)")
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY", "RSA PUBLIC KEY":
		return nil, errors.New("holds a public key; signing needs the private key")
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
}
