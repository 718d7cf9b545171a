package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signer mints the HS256 tokens of the embedded login. Only a shared secret can both sign and
// verify inside the gateway; with public keys, the private half lives at the IdP.
type Signer struct {
	secret   []byte
	issuer   string
	audience string
	ttl      time.Duration
	maxBytes int
	now      func() time.Time
}

// NewSigner checks the whole config, so a Signer never mints a token its Verifier would refuse.
func NewSigner(cfg Config) (*Signer, error) {
	if cfg.SecretFile == "" && cfg.SecretEnv == "" && !cfg.EphemeralSecret {
		if len(cfg.PublicKeyFiles) > 0 || cfg.JWKSFile != "" || cfg.JWKSURL != "" {
			return nil, errors.New("the embedded login needs an HS256 secret (secret_file or secret_env): " +
				"public keys can only verify, so with public keys alone tokens must come from an external identity provider")
		}
		return nil, errors.New("the embedded login needs an HS256 secret (secret_file or secret_env)")
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	secret, err := loadSecret(cfg)
	if err != nil {
		return nil, err
	}
	return &Signer{secret: secret, issuer: cfg.Issuer, audience: cfg.Audience, ttl: cfg.TTL,
		maxBytes: cfg.MaxTokenBytes, now: time.Now}, nil
}

// Mint returns a token and its expiry (whole seconds, as in the token) for a cookie's Expires.
func (s *Signer) Mint(subject string, roles []string) (token string, expires time.Time, err error) {
	if err := checkSubject(subject); err != nil {
		return "", time.Time{}, err
	}
	if roles == nil {
		roles = []string{} // null would be refused by Verify: roles must be an array
	}
	now := s.now().Truncate(time.Second)
	expires = now.Add(s.ttl)
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{s.audience},
			ExpiresAt: jwt.NewNumericDate(expires),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        rand.Text(),
		},
		Roles: roleList(slices.Clone(roles)),
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, &claims).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, err
	}
	if len(token) > s.maxBytes {
		return "", time.Time{}, fmt.Errorf("%w: minted token is %d bytes, max_token_bytes is %d", ErrTokenTooLarge, len(token), s.maxBytes)
	}
	return token, expires, nil
}
