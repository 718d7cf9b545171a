package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dualgate/dualgate/web/auth"
)

// userRoles is a users file that tests can edit while the server runs.
type userRoles struct {
	mu    sync.Mutex
	roles map[string][]string
}

func (u *userRoles) Authenticate(name, password string) ([]string, bool) {
	if password != "pw-"+name {
		return nil, false
	}
	return u.Roles(name)
}

func (u *userRoles) Roles(name string) ([]string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.roles[name]
	return r, ok
}

func (u *userRoles) set(name string, roles []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if roles == nil {
		delete(u.roles, name)
		return
	}
	u.roles[name] = roles
}

type extendCall struct {
	user, session string
	expires       time.Time
}

// fakeSockets stands in for the bridge: it records every Extend.
type fakeSockets struct {
	mu    sync.Mutex
	calls []extendCall
}

func (f *fakeSockets) Adopt(_ context.Context, ws *websocket.Conn, _, _ string, _ time.Time, done func()) {
	ws.Close()
	done()
}

func (f *fakeSockets) Extend(user, session string, expires time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, extendCall{user, session, expires})
	return 1
}

func (f *fakeSockets) End(string, string) int { return 0 }

func (f *fakeSockets) take() []extendCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

type refreshReply struct {
	User    string    `json:"user"`
	Roles   []string  `json:"roles"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token"`
	Sockets int       `json:"sockets"`
}

// postRefresh sends POST /api/refresh with the given headers; it returns the status, the
// decoded reply and the session cookie the reply set ("" if none).
func postRefresh(t *testing.T, base string, hdr map[string]string) (int, refreshReply, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/refresh", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := clientFrom("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var r refreshReply
	if res.StatusCode == 200 {
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("refresh reply %q: %v", b, err)
		}
	}
	cookie := ""
	for _, c := range res.Cookies() {
		if c.Name == "dualgate_session" {
			cookie = c.Value
		}
	}
	return res.StatusCode, r, cookie
}

func loginToken(t *testing.T, base, user string) string {
	t.Helper()
	code, body := do(t, "POST", base+"/api/login", `{"username":"`+user+`","password":"pw-`+user+`"}`, nil)
	var r refreshReply
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Token == "" {
		t.Fatalf("login %s: %d %s", user, code, body)
	}
	return r.Token
}

func claimsOf(t *testing.T, s *Server, tok string) *auth.Claims {
	t.Helper()
	c, err := s.verifier.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	return c
}

func TestRefreshRenewsTheSessionAndItsSockets(t *testing.T) {
	accts := &userRoles{roles: map[string][]string{"1001": {"agent"}, "1002": {"agent"}, "admin": {"admin"}}}
	socks := &fakeSockets{}
	// Many logins from one address in this test: the login limit is another test's subject.
	s := startServer(t, func(c *Config) { c.RateLimit.LoginPerMinute = 0 },
		Deps{Accounts: accts, Agents: socks, Admin: &fakeAdmin{state: map[string]string{}}})
	base := "http://" + s.Addr().String()
	origin := map[string]string{"Origin": base}
	tok := loginToken(t, base, "1001")
	first := claimsOf(t, s, tok)
	if first.SessionID == "" || first.AuthTime.IsZero() {
		t.Fatalf("a login token carries no session: %+v", first)
	}
	cookieHdr := func(tok string) map[string]string {
		return map[string]string{"Cookie": "dualgate_session=" + tok, "Origin": base}
	}

	t.Run("cookie from our origin", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // a later second, so the new exp is later than the old
		code, r, cookie := postRefresh(t, base, cookieHdr(tok))
		if code != 200 || r.Token == "" || cookie != r.Token || r.User != "1001" || r.Sockets != 1 {
			t.Fatalf("refresh: %d %+v cookie %q", code, r, cookie)
		}
		c := claimsOf(t, s, r.Token)
		if c.SessionID != first.SessionID || !c.AuthTime.Equal(first.AuthTime) || c.ID == first.ID {
			t.Errorf("the renewed token is not the same session with a new jti: %+v, was %+v", c, first)
		}
		if !c.ExpiresAt.After(first.ExpiresAt) || !c.ExpiresAt.Equal(r.Expires) {
			t.Errorf("renewed exp %v (reply %v), was %v", c.ExpiresAt, r.Expires, first.ExpiresAt)
		}
		calls := socks.take()
		if len(calls) != 1 || calls[0] != (extendCall{"1001", first.SessionID, c.ExpiresAt}) {
			t.Errorf("the bridge was asked %+v, want 1001's session moved to %v", calls, c.ExpiresAt)
		}
		tok = r.Token
	})

	t.Run("cookie without or with a foreign Origin", func(t *testing.T) {
		for _, o := range []string{"", "http://evil.example"} {
			code, _, cookie := postRefresh(t, base, map[string]string{"Cookie": "dualgate_session=" + tok, "Origin": o})
			if code != 403 || cookie != "" {
				t.Errorf("Origin %q: %d (cookie set: %v), want 403", o, code, cookie != "")
			}
		}
		if calls := socks.take(); len(calls) != 0 {
			t.Errorf("a refused refresh moved sockets: %+v", calls)
		}
	})

	t.Run("bearer", func(t *testing.T) {
		code, r, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + tok})
		if code != 200 || r.Token == "" {
			t.Fatalf("bearer refresh: %d", code)
		}
		socks.take()
	})

	t.Run("bad or missing token", func(t *testing.T) {
		for name, h := range map[string]map[string]string{
			"none":     origin,
			"tampered": {"Authorization": "Bearer " + tok[:len(tok)-2] + "xx"},
			"garbage":  cookieHdr("not-a-jwt"),
		} {
			if code, _, _ := postRefresh(t, base, h); code != 401 {
				t.Errorf("%s: %d, want 401", name, code)
			}
		}
		if calls := socks.take(); len(calls) != 0 {
			t.Errorf("a refused refresh moved sockets: %+v", calls)
		}
	})

	t.Run("another user's token moves only that user's sockets", func(t *testing.T) {
		other := loginToken(t, base, "1002")
		code, r, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + other})
		if code != 200 || r.User != "1002" {
			t.Fatalf("1002's refresh: %d %+v", code, r)
		}
		for _, c := range socks.take() {
			if c.user != "1002" || c.session != claimsOf(t, s, other).SessionID {
				t.Errorf("1002's refresh moved %+v", c)
			}
		}
	})

	t.Run("roles changed or user removed", func(t *testing.T) {
		t2 := loginToken(t, base, "1002")
		accts.set("1002", []string{"agent", "admin"})
		if code, _, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + t2}); code != 401 {
			t.Errorf("roles changed: %d, want 401", code)
		}
		accts.set("1002", nil)
		if code, _, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + t2}); code != 401 {
			t.Errorf("user removed: %d, want 401", code)
		}
		if calls := socks.take(); len(calls) != 0 {
			t.Errorf("a refused refresh moved sockets: %+v", calls)
		}
		// The same roles in another order are the same roles.
		accts.set("admin", []string{"agent", "admin"})
		t3 := loginToken(t, base, "admin")
		accts.set("admin", []string{"admin", "agent"})
		if code, _, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + t3}); code != 200 {
			t.Errorf("unchanged role set: %d, want 200", code)
		}
		socks.take()
	})

	t.Run("logout ends the session", func(t *testing.T) {
		// A second session of the same user stays usable: logout ends one session, not the user.
		elsewhere := loginToken(t, base, "1001")
		if code, _ := do(t, "POST", base+"/api/logout", "", cookieHdr(tok)); code != 204 {
			t.Fatalf("logout: %d", code)
		}
		if code, _, _ := postRefresh(t, base, cookieHdr(tok)); code != 401 {
			t.Errorf("refresh after logout: %d, want 401", code)
		}
		if calls := socks.take(); len(calls) != 0 {
			t.Errorf("refresh after logout moved sockets: %+v", calls)
		}
		// Nor can the signed-out session's token open an agent socket.
		d := websocket.Dialer{Subprotocols: []string{"sip"}, HandshakeTimeout: 2 * time.Second}
		h := http.Header{"Authorization": {"Bearer " + tok}, "Origin": {base}}
		if c, res, err := d.Dial("ws://"+s.Addr().String()+"/ws", h); err == nil || res == nil || res.StatusCode != 401 {
			if c != nil {
				c.Close()
			}
			t.Errorf("upgrade with a signed-out session: %v %v, want 401", res, err)
		}
		if code, _, _ := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + elsewhere}); code != 200 {
			t.Errorf("the other session after logout: %d, want 200", code)
		}
		// Every authenticated route refuses the signed-out session, not only refresh and /ws.
		if code, _ := do(t, "GET", base+"/api/me", "", map[string]string{"Authorization": "Bearer " + tok}); code != 401 {
			t.Errorf("/api/me with a signed-out session: %d, want 401", code)
		}
		if code, _ := do(t, "GET", base+"/api/me", "", map[string]string{"Authorization": "Bearer " + elsewhere}); code != 200 {
			t.Errorf("/api/me with the other session: %d, want 200", code)
		}
	})

	t.Run("an admin's logout ends its admin API access", func(t *testing.T) {
		adm := loginToken(t, base, "admin")
		bearer := map[string]string{"Authorization": "Bearer " + adm}
		if code, _ := do(t, "GET", base+"/api/admin/dispatcher", "", bearer); code != 200 {
			t.Fatalf("admin API before logout: %d", code)
		}
		if code, _ := do(t, "POST", base+"/api/logout", "", bearer); code != 204 {
			t.Fatalf("logout: %d", code)
		}
		if code, _ := do(t, "GET", base+"/api/admin/dispatcher", "", bearer); code != 401 {
			t.Errorf("admin API with the signed-out session: %d, want 401", code)
		}
	})
}

// With no embedded login (tokens from an identity provider), refresh mints nothing: a newer
// token presented there moves its own session's sockets to its own exp.
func TestRefreshExternalToken(t *testing.T) {
	socks := &fakeSockets{}
	s := startServer(t, nil, Deps{Agents: socks})
	base := "http://" + s.Addr().String()
	tok := token(t, s, "1001", "agent") // signed elsewhere with the shared key
	c := claimsOf(t, s, tok)
	code, r, cookie := postRefresh(t, base, map[string]string{"Authorization": "Bearer " + tok})
	if code != 200 || r.Token != "" || cookie != "" || !r.Expires.Equal(c.ExpiresAt) {
		t.Fatalf("external refresh: %d %+v cookie %q", code, r, cookie)
	}
	if calls := socks.take(); len(calls) != 1 || calls[0] != (extendCall{"1001", c.SessionID, c.ExpiresAt}) {
		t.Errorf("the bridge was asked %+v", calls)
	}
}

func TestRefreshRateLimit(t *testing.T) {
	accts := &userRoles{roles: map[string][]string{"1001": {"agent"}}}
	s := startServer(t, func(c *Config) { c.RateLimit.RefreshPerMinute = 4 }, Deps{Accounts: accts})
	base := "http://" + s.Addr().String()
	h := map[string]string{"Authorization": "Bearer " + loginToken(t, base, "1001")}
	limited := false
	for range 10 {
		if code, _, _ := postRefresh(t, base, h); code == 429 {
			limited = true
			break
		} else if code != 200 {
			t.Fatalf("refresh: %d", code)
		}
	}
	if !limited {
		t.Error("10 refreshes at once from one address were never limited (4 per minute)")
	}
}

func TestSameRoles(t *testing.T) {
	for _, tc := range []struct {
		a, b []string
		want bool
	}{
		{[]string{"agent"}, []string{"agent"}, true},
		{[]string{"agent", "admin"}, []string{"admin", "agent"}, true},
		{[]string{"agent"}, []string{"agent", "admin"}, false},
		{nil, []string{}, true},
		{[]string{"agent"}, nil, false},
	} {
		if got := sameRoles(tc.a, tc.b); got != tc.want {
			t.Errorf("sameRoles(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
}
