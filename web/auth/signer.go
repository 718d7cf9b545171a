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
	secret     []byte
	issuer     string
	audience   string
	ttl        time.Duration
	maxSession time.Duration
	maxBytes   int
	now        func() time.Time
}

// Why Renew refused; the web plane answers 401 to either, and the portal asks for the password.
var (
	// ErrNotRenewable: the token carries no session (sid and auth_time), so it cannot be renewed:
	// an IdP's token, or one minted before sessions existed.
	ErrNotRenewable = errors.New("token has no renewable session")
	// ErrSessionOver: the session reached max_session after its password login.
	ErrSessionOver = errors.New("session reached its maximum lifetime")
)

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
		maxSession: cfg.MaxSession, maxBytes: cfg.MaxTokenBytes, now: time.Now}, nil
}

// Mint starts a session after a password login: a token with a new sid and auth_time now. It
// returns the token and its expiry (whole seconds, as in the token) for a cookie's Expires.
func (s *Signer) Mint(subject string, roles []string) (token string, expires time.Time, err error) {
	now := s.now().Truncate(time.Second)
	return s.mint(subject, roles, rand.Text(), now, now, now.Add(s.ttl))
}

// Renew mints the next token of c's session for roles (the caller checks them against the
// users file): same sid and auth_time, a fresh ttl, but never past auth_time + max_session.
// That cap is the session's absolute end, whatever the refreshes.
func (s *Signer) Renew(c *Claims, roles []string) (token string, expires time.Time, err error) {
	if c == nil || c.SessionID == "" || c.AuthTime.IsZero() {
		return "", time.Time{}, ErrNotRenewable
	}
	now := s.now().Truncate(time.Second)
	end := c.AuthTime.Add(s.maxSession)
	if c.AuthTime.After(now.Add(time.Minute)) { // only a forger or a broken clock makes these
		return "", time.Time{}, ErrNotRenewable
	}
	expires = now.Add(s.ttl)
	if end.Before(expires) {
		expires = end
	}
	if !expires.After(now) {
		return "", time.Time{}, ErrSessionOver
	}
	return s.mint(c.Subject, roles, c.SessionID, c.AuthTime, now, expires)
}

func (s *Signer) mint(subject string, roles []string, sid string, authTime, now, expires time.Time) (string, time.Time, error) {
	if err := checkSubject(subject); err != nil {
		return "", time.Time{}, err
	}
	if roles == nil {
		roles = []string{} // null would be refused by Verify: roles must be an array
	}
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
		Roles:     roleList(slices.Clone(roles)),
		SessionID: sid,
		AuthTime:  jwt.NewNumericDate(authTime),
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, &claims).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, err
	}
	if len(token) > s.maxBytes {
		return "", time.Time{}, fmt.Errorf("%w: minted token is %d bytes, max_token_bytes is %d", ErrTokenTooLarge, len(token), s.maxBytes)
	}
	return token, expires, nil
}
