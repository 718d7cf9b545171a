package web

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dualgate/dualgate/web/auth"
)

// Accounts checks web logins against the users file; the gateway adapts the users store to it.
type Accounts interface {
	// Authenticate reports the user's roles when the password is right.
	Authenticate(name, password string) (roles []string, ok bool)
	// Roles reports the roles of a user still in the users file (ok false: no such user), for
	// refreshing a session without the password.
	Roles(name string) (roles []string, ok bool)
}

// Lockout after repeated failures: after lockoutAfter consecutive failures a name is refused for
// lockoutFor, whatever the password. It slows guessing even from many addresses (the per-IP
// login rate handles one address). The cost, that someone can lock a known name out, is the
// usual trade; the lock is short and visible in the logs.
const (
	lockoutAfter = 5
	lockoutFor   = 5 * time.Minute
)

type loginGuard struct {
	mu    sync.Mutex
	fails map[string]*failState
}

type failState struct {
	count  int
	until  time.Time
	recent time.Time
}

func newLoginGuard() *loginGuard { return &loginGuard{fails: map[string]*failState{}} }

// locked reports whether the name is locked out and for how long still.
func (g *loginGuard) locked(name string, now time.Time) (bool, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.fails[name]
	if f == nil || !now.Before(f.until) {
		return false, 0
	}
	return true, f.until.Sub(now)
}

func (g *loginGuard) failed(name string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.fails[name]
	if f == nil || now.Sub(f.recent) > lockoutFor {
		f = &failState{}
		g.fails[name] = f
	}
	f.count++
	f.recent = now
	if f.count >= lockoutAfter {
		f.until = now.Add(lockoutFor)
		f.count = 0
	}
	if len(g.fails) > 100000 { // bound memory against name-spraying: forget the idle entries
		for n, s := range g.fails {
			if now.Sub(s.recent) > time.Minute {
				delete(g.fails, n)
			}
		}
	}
}

func (g *loginGuard) succeeded(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.fails, name)
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type session struct {
	User    string    `json:"user"`
	Roles   []string  `json:"roles"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token,omitempty"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.deps.Accounts == nil || s.signer == nil {
		writeJSONError(w, http.StatusNotFound, "login is not configured: set users_file and an HS256 secret")
		return
	}
	// A cross-site form or script must not log the browser in as someone else (login CSRF).
	if r.Header.Get("Origin") != "" && !s.originAllowed(r) {
		writeJSONError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var req loginRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Username == "" || req.Password == "" {
		writeJSONError(w, http.StatusBadRequest, `body must be {"username": "...", "password": "..."}`)
		return
	}
	name := strings.TrimSpace(req.Username)
	now := time.Now()
	if locked, wait := s.guard.locked(name, now); locked {
		_, class := clientOf(r)
		s.m.limited.WithLabelValues("lockout", s.ips.className(class)).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeJSONError(w, http.StatusTooManyRequests, "too many failed logins for this user; try again later")
		return
	}
	roles, ok := s.deps.Accounts.Authenticate(name, req.Password)
	if !ok {
		s.guard.failed(name, now)
		s.log.Info("login failed", "user", name, "remote", ClientIP(r).String())
		writeJSONError(w, http.StatusUnauthorized, "wrong user name or password")
		return
	}
	s.guard.succeeded(name)
	tok, exp, err := s.signer.Mint(name, roles)
	if err != nil {
		s.log.Error("mint session token", "user", name, "error", err)
		writeJSONError(w, http.StatusInternalServerError, "could not start a session")
		return
	}
	http.SetCookie(w, s.sessionCookie(tok, exp))
	s.log.Info("login", "user", name, "roles", roles, "remote", ClientIP(r).String())
	writeJSON(w, http.StatusOK, session{User: name, Roles: roles, Expires: exp, Token: tok})
}

// logout clears the cookie and, when the request proves a session (a valid token with a sid),
// ends that session: the token stays valid until its exp for reading (JWTs cannot be recalled),
// but it can no longer be refreshed or open an agent socket.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" && !s.originAllowed(r) {
		writeJSONError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if c, err := s.verifier.FromRequest(r); err == nil && c.SessionID != "" {
		s.ended.add(c.Subject, c.SessionID, time.Now().Add(s.cfg.JWT.MaxSession))
		closed := 0
		if s.deps.Agents != nil {
			closed = s.deps.Agents.End(c.Subject, c.SessionID)
		}
		s.log.Info("logout", "user", c.Subject, "remote", ClientIP(r).String(), "agent_sockets_closed", closed)
	}
	c := s.sessionCookie("", time.Unix(0, 0))
	c.MaxAge = -1
	http.SetCookie(w, c)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	c, ok := auth.ClaimsFrom(r.Context())
	if !ok {
		writeJSONError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	writeJSON(w, http.StatusOK, session{User: c.Subject, Roles: c.Roles, Expires: c.ExpiresAt})
}

// sessionCookie holds the JWT for the portals: HttpOnly (no script can read it), SameSite=Strict
// (no cross-site request carries it), Secure whenever the plane runs TLS.
func (s *Server) sessionCookie(token string, exp time.Time) *http.Cookie {
	return &http.Cookie{Name: s.cfg.JWT.CookieName, Value: token, Path: "/", Expires: exp,
		HttpOnly: true, Secure: s.tls.Enabled(), SameSite: http.SameSiteStrictMode}
}

// authenticated is the verifier's middleware plus the one check it cannot make: a token of a
// session that signed out is still valid until its exp, but every route refuses it, so signing
// out in one tab ends the session everywhere (admin API, refresh, agent sockets, /api/me).
func (s *Server) authenticated(next http.Handler) http.Handler {
	ended := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := auth.ClaimsFrom(r.Context()); ok && s.ended.has(c.Subject, c.SessionID) {
			writeJSONError(w, http.StatusUnauthorized, "session ended; sign in again")
			return
		}
		next.ServeHTTP(w, r)
	})
	return s.verifier.Middleware(ended)
}
