package auth

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
)

type claimsKey struct{}

// WithClaims is how Middleware hands claims to handlers; tests of handlers use it to skip
// minting a token.
func WithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFrom returns the claims Middleware verified for this request.
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	c, _ := ctx.Value(claimsKey{}).(*Claims)
	return c, c != nil
}

// Middleware lets a request through only with a verified token, its claims in the context. A
// refusal is answered here and next never runs, so a handler cannot forget the check.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := v.FromRequest(r)
		if err != nil {
			// The error text names the check that failed and at most a clipped kid: never the
			// token or a secret.
			v.log.LogAttrs(r.Context(), slog.LevelDebug, "jwt refused",
				slog.String("reason", reason(err)), slog.String("error", err.Error()),
				slog.String("remote", r.RemoteAddr))
			unauthorized(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), c)))
	})
}

// RequireRole goes behind Middleware. It panics on a role the gateway does not know, at wiring
// time, because a misspelt role would otherwise lock everyone out silently.
func RequireRole(role string) func(http.Handler) http.Handler {
	if !knownRole(role) {
		panic("auth.RequireRole: unknown role " + role)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, ok := ClaimsFrom(r.Context())
			if !ok {
				unauthorized(w, ErrNoToken)
				return
			}
			if !c.HasRole(role) {
				w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
				writeError(w, http.StatusForbidden, "forbidden: requires role "+role)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// reason is the short text of the sentinel an error wraps.
func reason(err error) string {
	for _, s := range []error{ErrNoToken, ErrTokenInQuery, ErrScheme, ErrTokenTooLarge, ErrMalformed,
		ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrExpired, ErrNotYetValid, ErrIssuer, ErrAudience, ErrClaims} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "invalid token"
}

// unauthorized follows RFC 6750 §3: no error code when no credentials came, invalid_request for
// a badly presented one, invalid_token for one that failed verification.
func unauthorized(w http.ResponseWriter, err error) {
	challenge := `Bearer error="invalid_token"`
	switch {
	case errors.Is(err, ErrNoToken):
		challenge = "Bearer"
	case errors.Is(err, ErrTokenInQuery), errors.Is(err, ErrScheme):
		challenge = `Bearer error="invalid_request"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, http.StatusUnauthorized, reason(err))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": msg})
	_, _ = w.Write(append(b, '\n'))
}
