package web

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dualgate/dualgate/web/auth"
)

// refreshed is the answer of POST /api/refresh: the session as after login, and how many of
// the session's live agent sockets now close at the new expiry instead of the old one.
type refreshed struct {
	session
	Sockets int `json:"sockets"`
}

// refresh keeps a session going without a password, so an agent's socket and registration
// survive a shift longer than one token. What bounds it:
//
//   - the token presented must verify (cookie or bearer; the cookie only from our origin, as
//     every cookie-authenticated state change) and its session must not have been signed out;
//   - a token of the embedded login (HS256, the secret only we hold) is re-minted for the same
//     session, never past auth_time + max_session: a stolen cookie cannot be refreshed forever,
//     and the password is asked for again at least once per max_session;
//   - the user must still be in the users file with the same roles: taking someone out of the
//     file, or changing their roles, ends their sessions at the next refresh (at most one ttl);
//   - a token from an external IdP is not re-minted (its IdP refreshes it); presenting a newer
//     one here only moves the live sockets of its user and session to its exp.
//
// Either way only the sockets opened by the same user in the same session move, and never past
// the exp of the token this request proved.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	c, ok := auth.ClaimsFrom(r.Context())
	if !ok {
		writeJSONError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	if s.signer == nil || c.Algorithm != auth.AlgHS256 {
		// An external IdP's token: it is itself the newer token.
		writeJSON(w, http.StatusOK, refreshed{session: session{User: c.Subject, Roles: c.Roles, Expires: c.ExpiresAt},
			Sockets: s.extendSockets(c.Subject, c.SessionID, c.ExpiresAt)})
		return
	}
	roles, ok := s.deps.Accounts.Roles(c.Subject)
	switch {
	case !ok:
		s.log.Info("refresh refused: user no longer in the users file", "user", c.Subject)
		writeJSONError(w, http.StatusUnauthorized, "account no longer exists; sign in again")
		return
	case !sameRoles(roles, c.Roles):
		s.log.Info("refresh refused: roles changed", "user", c.Subject)
		writeJSONError(w, http.StatusUnauthorized, "roles changed; sign in again")
		return
	}
	tok, exp, err := s.signer.Renew(c, roles)
	switch {
	case errors.Is(err, auth.ErrNotRenewable), errors.Is(err, auth.ErrSessionOver):
		writeJSONError(w, http.StatusUnauthorized, "session ended ("+err.Error()+"); sign in again")
		return
	case err != nil:
		s.log.Error("renew session token", "user", c.Subject, "error", err)
		writeJSONError(w, http.StatusInternalServerError, "could not renew the session")
		return
	}
	http.SetCookie(w, s.sessionCookie(tok, exp))
	n := s.extendSockets(c.Subject, c.SessionID, exp)
	s.log.Info("session refreshed", "user", c.Subject, "expires", exp, "sockets", n, "remote", ClientIP(r).String())
	writeJSON(w, http.StatusOK, refreshed{session: session{User: c.Subject, Roles: roles, Expires: exp, Token: tok}, Sockets: n})
}

func (s *Server) extendSockets(user, session string, exp time.Time) int {
	if s.deps.Agents == nil {
		return 0
	}
	return s.deps.Agents.Extend(user, session, exp)
}

// sameRoles compares as sets: the users file's order is not the token's business.
func sameRoles(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// endedSessions remembers the sessions signed out through POST /api/logout, so their tokens,
// still valid until exp (JWTs cannot be recalled), can neither be refreshed nor open a socket.
// An entry is kept for max_session, past which no token of the session can be renewed anyway.
// It is per process: several gateways behind one name do not share it.
type endedSessions struct {
	mu    sync.Mutex
	until map[sessionKey]time.Time
}

type sessionKey struct{ user, session string }

func newEndedSessions() *endedSessions { return &endedSessions{until: map[sessionKey]time.Time{}} }

func (e *endedSessions) add(user, session string, until time.Time) {
	if session == "" {
		return // nothing names the session; the token's own exp is all that ends it
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.until[sessionKey{user, session}] = until
}

func (e *endedSessions) has(user, session string) bool {
	if session == "" {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.until[sessionKey{user, session}]
	return ok
}

func (e *endedSessions) sweep(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, t := range e.until {
		if now.After(t) {
			delete(e.until, k)
		}
	}
}
