package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Why a token was refused. Verify and FromRequest wrap one of these (test with errors.Is); the
// text of each is the short reason the 401 body carries, so none reveals more than that.
var (
	ErrNoToken       = errors.New("missing token")
	ErrTokenInQuery  = errors.New("token in query string not accepted")
	ErrScheme        = errors.New("authorization scheme must be Bearer")
	ErrTokenTooLarge = errors.New("token too large")
	ErrMalformed     = errors.New("malformed token")
	ErrAlgorithm     = errors.New("signing algorithm not allowed")
	ErrUnknownKey    = errors.New("unknown signing key")
	ErrSignature     = errors.New("invalid signature")
	ErrExpired       = errors.New("token expired")
	ErrNotYetValid   = errors.New("token not valid yet")
	ErrIssuer        = errors.New("wrong issuer")
	ErrAudience      = errors.New("wrong audience")
	ErrClaims        = errors.New("invalid claims")
)

// Roles the gateway gives power to. Tokens may carry other names; they are kept in Claims but
// HasRole never reports them, so a typo or a foreign IdP's role cannot grant anything.
const (
	RoleAgent = "agent"
	RoleAdmin = "admin"
)

func knownRole(r string) bool { return r == RoleAgent || r == RoleAdmin }

// queryTokenParams are where clients commonly put tokens in URLs; a URL ends up in access logs,
// proxies and Referer headers, so such a token is treated as leaked and refused.
var queryTokenParams = []string{"token", "access_token", "jwt"}

// maxSubjectBytes bounds sub, which becomes the agent's SIP identity downstream.
const maxSubjectBytes = 256

// Claims is what a verified token says about its bearer.
type Claims struct {
	Subject   string    // sub: the user
	Roles     []string  // roles: as in the token, known or not
	ExpiresAt time.Time // exp
	ID        string    // jti
	// SessionID (sid) names the login session the token belongs to: the embedded login mints
	// one per password login and keeps it across refreshes; an IdP may send its own. Empty
	// when the token has none.
	SessionID string
	// AuthTime (auth_time) is when the user last gave a password; zero when absent. Refresh
	// bounds a session by it.
	AuthTime time.Time
	// Algorithm is the alg the token was verified with. Only HS256 tokens can be ours (the
	// signer holds that secret and nothing else), so refresh re-mints only those.
	Algorithm string
}

// HasRole reports only the roles the gateway knows (RoleAgent, RoleAdmin); unknown names carry
// no power. A nil Claims has no role, so callers need no separate nil check.
func (c *Claims) HasRole(r string) bool {
	return c != nil && knownRole(r) && slices.Contains(c.Roles, r)
}

// tokenClaims is the wire shape; decoding into a struct (not a map) makes a wrongly typed
// registered claim or roles a decode error instead of something to re-check by hand.
type tokenClaims struct {
	jwt.RegisteredClaims
	Roles     roleList         `json:"roles"`
	SessionID string           `json:"sid,omitempty"`
	AuthTime  *jwt.NumericDate `json:"auth_time,omitempty"`
}

// maxSessionIDBytes bounds sid: it keys the bridge's socket registry and the logout list.
const maxSessionIDBytes = 256

// Validate runs after the signature and the registered claims are checked (jwt calls it as a
// ClaimsValidator), so sub's rules hold for every accepted token.
func (c *tokenClaims) Validate() error {
	if err := checkSubject(c.Subject); err != nil {
		return err
	}
	if len(c.SessionID) > maxSessionIDBytes || !utf8.ValidString(c.SessionID) ||
		strings.IndexFunc(c.SessionID, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: sid must be printable UTF-8 of at most %d bytes", ErrClaims, maxSessionIDBytes)
	}
	return nil
}

// checkSubject keeps sub usable as an identity: present, short, and free of control characters
// (CR/LF would let a subject inject lines wherever it is written). Callers that put it in a SIP
// URI must still escape it.
func checkSubject(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: sub is missing or empty", ErrClaims)
	case len(s) > maxSubjectBytes:
		return fmt.Errorf("%w: sub longer than %d bytes", ErrClaims, maxSubjectBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: sub is not UTF-8", ErrClaims)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: sub contains control characters", ErrClaims)
	}
	return nil
}

// roleList refuses anything but an array of strings: a scalar "admin" is a different claim
// shape than we sign, and accepting it would invite IdP misconfigurations to grant power.
type roleList []string

var errRolesShape = fmt.Errorf("%w: roles must be an array of strings", ErrClaims)

func (r *roleList) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '[' {
		return errRolesShape
	}
	var s []string
	if err := json.Unmarshal(b, &s); err != nil {
		return errRolesShape
	}
	*r = s
	return nil
}

// Verifier checks tokens against the configured keys. It is safe for concurrent use; only the
// key set changes after construction, swapped whole on a JWKS refresh.
type Verifier struct {
	cfg     Config
	log     *slog.Logger
	parser  *jwt.Parser
	allowed map[string]bool
	secret  []byte
	keys    atomic.Pointer[keySet]
	remote  *remoteJWKS // nil unless jwks_url
}

// NewVerifier validates cfg and loads every key; with jwks_url it fetches the document once
// before returning (a gateway that cannot verify tokens should not start) and then refreshes
// it until ctx ends.
func NewVerifier(ctx context.Context, cfg Config, log *slog.Logger) (*Verifier, error) {
	return newVerifier(ctx, cfg, log, testHooks{})
}

// testHooks lets tests drive the JWKS timing without waiting on the real clock.
type testHooks struct {
	now          func() time.Time
	refetchEvery time.Duration
	refreshEvery time.Duration
}

func newVerifier(ctx context.Context, cfg Config, log *slog.Logger, h testHooks) (*Verifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	v := &Verifier{
		cfg:     cfg,
		log:     log,
		allowed: map[string]bool{},
		parser: jwt.NewParser(
			jwt.WithValidMethods(slices.Clone(cfg.Algorithms)),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			// Non-canonical base64 would make one signature valid for several strings.
			jwt.WithStrictDecoding(),
		),
	}
	for _, a := range cfg.Algorithms {
		v.allowed[a] = true
	}
	secret, err := loadSecret(cfg)
	if err != nil {
		return nil, err
	}
	v.secret = secret

	var keys []pubKey
	source := "secret"
	switch {
	case len(cfg.PublicKeyFiles) > 0:
		source = "public_key_files"
		keys, err = loadPEMFiles(cfg.PublicKeyFiles, cfg.Algorithms)
	case cfg.JWKSFile != "":
		source = "jwks_file"
		keys, err = loadJWKSFile(cfg.JWKSFile, cfg.Algorithms, log)
	}
	if err != nil {
		return nil, err
	}
	ks, err := newKeySet(keys)
	if err != nil {
		return nil, err
	}
	v.keys.Store(ks)

	if cfg.JWKSURL != "" {
		source = "jwks_url"
		v.remote = newRemoteJWKS(ctx, v, h)
		if err := v.remote.initial(); err != nil {
			return nil, err
		}
		every := cfg.JWKSRefresh
		if h.refreshEvery > 0 {
			every = h.refreshEvery
		}
		go v.remote.loop(every)
	}
	log.Info("jwt verifier ready", "algorithms", cfg.Algorithms, "key_source", source,
		"public_keys", v.keys.Load().n, "issuer", cfg.Issuer, "audience", cfg.Audience)
	return v, nil
}

// Verify checks one token. ctx bounds the wait for a kid-triggered JWKS re-fetch.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, ErrNoToken
	}
	if len(token) > v.cfg.MaxTokenBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTokenTooLarge, len(token), v.cfg.MaxTokenBytes)
	}
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	})
	if err != nil {
		return nil, v.classify(t, err)
	}
	c := &Claims{Subject: tc.Subject, Roles: tc.Roles, ExpiresAt: tc.ExpiresAt.Time, ID: tc.ID,
		SessionID: tc.SessionID, Algorithm: t.Method.Alg()}
	if tc.AuthTime != nil {
		c.AuthTime = tc.AuthTime.Time
	}
	return c, nil
}

// keyFor picks the key from the algorithm family, never the other way round: HS256 gets the
// configured secret and nothing else, a public-key algorithm gets only keys loaded for it. So
// an HS256 token "signed" with a public key's bytes has no path to being checked with them.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	// RFC 7515 §4.1.11: extensions we do not understand must make the token invalid.
	if _, ok := t.Header["crit"]; ok {
		return nil, fmt.Errorf("%w: crit header is not supported", ErrMalformed)
	}
	alg := t.Method.Alg()
	if !v.allowed[alg] { // WithValidMethods already refused it; kept so keyFor is safe alone
		return nil, ErrAlgorithm
	}
	if alg == AlgHS256 {
		if v.secret == nil {
			return nil, fmt.Errorf("%w: no HS256 secret", ErrUnknownKey)
		}
		return v.secret, nil
	}
	kid := ""
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("%w: kid must be a non-empty string", ErrMalformed)
		}
		kid = s
	}
	ks := v.keys.Load()
	if kid == "" {
		switch keys := ks.byAlg[alg]; len(keys) {
		case 0:
			return nil, fmt.Errorf("%w: no %s key", ErrUnknownKey, alg)
		case 1:
			return keys[0], nil
		default:
			return jwt.VerificationKeySet{Keys: keys}, nil
		}
	}
	k, ok := ks.byKid[kid]
	if !ok && v.remote != nil {
		k, ok = v.remote.refetchFor(ctx, kid)
	}
	if !ok {
		return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, clip(kid))
	}
	if k.alg != alg {
		return nil, fmt.Errorf("%w: kid %q is an %s key, the token says %s", ErrAlgorithm, clip(kid), k.alg, clip(alg))
	}
	return k.key, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// classify maps jwt's errors onto ours so callers and the 401 body see one stable vocabulary.
func (v *Verifier) classify(t *jwt.Token, err error) error {
	// Our own sentinels first: keyFor and roleList raise them inside jwt's wrapping.
	for _, ours := range []error{ErrClaims, ErrAlgorithm, ErrUnknownKey, ErrMalformed} {
		if errors.Is(err, ours) {
			return fmt.Errorf("%w: %w", ours, err)
		}
	}
	var kind error
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		kind = ErrMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable): // alg missing or unknown to jwt
		kind = ErrAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		kind = ErrSignature
		if t != nil && t.Method != nil && !v.allowed[t.Method.Alg()] {
			kind = ErrAlgorithm
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		kind = ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		kind = ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		kind = ErrIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		kind = ErrAudience
	default:
		kind = ErrClaims
	}
	return fmt.Errorf("%w: %w", kind, err)
}

// FromRequest reads the token from "Authorization: Bearer", else from the session cookie.
func (v *Verifier) FromRequest(r *http.Request) (*Claims, error) {
	tok, err := v.tokenFrom(r)
	if err != nil {
		return nil, err
	}
	return v.Verify(r.Context(), tok)
}

// tokenFrom refuses ambiguity instead of choosing: two Authorization headers or two session
// cookies (a sibling subdomain can plant one) could otherwise make us act on the wrong identity.
// A token in the query string is refused even beside a good header: it has already leaked, and
// accepting the request would hide the client bug that leaks it.
func (v *Verifier) tokenFrom(r *http.Request) (string, error) {
	if r.URL != nil && r.URL.RawQuery != "" {
		q := r.URL.Query()
		for _, p := range queryTokenParams {
			if q.Get(p) != "" {
				return "", ErrTokenInQuery
			}
		}
	}
	switch hs := r.Header.Values("Authorization"); len(hs) {
	case 0:
	case 1:
		scheme, tok, _ := strings.Cut(strings.TrimSpace(hs[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", ErrScheme
		}
		if tok = strings.TrimSpace(tok); tok == "" {
			return "", ErrNoToken
		}
		return tok, nil
	default:
		return "", fmt.Errorf("%w: more than one Authorization header", ErrMalformed)
	}
	switch cs := r.CookiesNamed(v.cfg.CookieName); len(cs) {
	case 0:
		return "", ErrNoToken
	case 1:
		if cs[0].Value == "" {
			return "", ErrNoToken
		}
		return cs[0].Value, nil
	default:
		return "", fmt.Errorf("%w: more than one %s cookie", ErrMalformed, v.cfg.CookieName)
	}
}
