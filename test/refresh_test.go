package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dualgate/dualgate/gateway"
)

// Session refresh seen from agents' sockets (issue 5): with tokens of a few seconds, a socket
// whose session is refreshed outlives the token it opened with and keeps carrying SIP; sockets
// of other sessions, other users, or refreshed with a bad token close at their own expiry; a
// signed-out session cannot be refreshed.

const shortTTL = 5 * time.Second // long enough for a loaded CI machine: the test refreshes every second

func refreshGateway(t *testing.T) *gateway.Gateway {
	t.Helper()
	return startGateway(t, freePort(t), shortTokens(t, edgeConfig(t, freePort(t), ""), shortTTL))
}

// shortTokens rewrites edgeConfig's http.jwt line for tokens that live ttl, with no leeway
// (max_session keeps its default of hours, far past any test).
func shortTokens(t *testing.T, cfg string, ttl time.Duration) string {
	t.Helper()
	short := strings.Replace(cfg, "jwt: {ephemeral_secret: true}",
		fmt.Sprintf("jwt: {ephemeral_secret: true, ttl: %s, leeway: 0s}", ttl), 1)
	if short == cfg {
		t.Fatal("edgeConfig's http.jwt line changed; update shortTokens")
	}
	return short
}

type refreshReply struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token"`
	Sockets int       `json:"sockets"`
}

// refreshWith posts /api/refresh with a bearer token, or with the session cookie and our Origin
// as the portal does.
func refreshWith(t *testing.T, gw *gateway.Gateway, token string, cookie bool) (int, refreshReply) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+gw.HTTPAddr()+"/api/refresh", nil)
	if cookie {
		req.AddCookie(&http.Cookie{Name: "dualgate_session", Value: token})
		req.Header.Set("Origin", "http://"+gw.HTTPAddr())
	} else {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
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
		if cookie && !hasSessionCookie(res, r.Token) {
			t.Errorf("the refresh did not set the new token in the cookie")
		}
	}
	return res.StatusCode, r
}

func hasSessionCookie(res *http.Response, token string) bool {
	for _, c := range res.Cookies() {
		if c.Name == "dualgate_session" && c.Value == token && token != "" {
			return true
		}
	}
	return false
}

// agentWithToken opens an agent socket with a given token (connectAgent logs in by itself).
func agentWithToken(t *testing.T, gw *gateway.Gateway, user, token string) *wsAgent {
	t.Helper()
	c, res, err := dialWS(gw, token, "http://"+gw.HTTPAddr(), "sip")
	if err != nil {
		t.Fatalf("agent %s: upgrade failed: %v (%v)", user, err, res)
	}
	t.Cleanup(func() { c.Close() })
	return &wsAgent{t: t, c: c, user: user}
}

// closedAtExpiry reads until the socket closes and reports whether the gateway closed it for
// an expired token (1008 "token expired").
func (a *wsAgent) closedAtExpiry(within time.Duration) bool {
	return a.closedWith("token expired", within)
}

// closedWith reports whether the gateway closes the socket within the time, with a policy
// violation and reason.
func (a *wsAgent) closedWith(reason string, within time.Duration) bool {
	_ = a.c.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := a.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		return errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation && ce.Text == reason
	}
}

func TestBridgeSessionRefresh(t *testing.T) {
	gw := refreshGateway(t)
	start := time.Now()

	tok := loginToken(t, gw, "1001") // kept and replaced at each refresh, as the portal's cookie
	refreshed := agentWithToken(t, gw, "1001", tok)
	secondTok := loginToken(t, gw, "1001") // the same user on another device: another session
	otherDevice := agentWithToken(t, gw, "1001", secondTok)
	otherUserTok := loginToken(t, gw, "1002")
	otherUser := agentWithToken(t, gw, "1002", otherUserTok)
	origExp := start.Truncate(time.Second).Add(shortTTL + time.Second) // the latest any of them can expire
	if got := refreshed.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("agent REGISTER: %q", firstLine([]byte(got)))
	}

	// A bad token and a tampered one refresh nothing.
	for _, bad := range []string{"not-a-jwt", secondTok[:len(secondTok)-3] + "abc"} {
		if code, _ := refreshWith(t, gw, bad, false); code != 401 {
			t.Errorf("refresh with a bad token: %d, want 401", code)
		}
	}

	// The portal's rhythm: refresh well before each expiry, with the cookie, past two original
	// lifetimes. 1002 refreshes too, once: that moves only 1002's socket.
	time.Sleep(1100 * time.Millisecond) // a later second than the login, so exp moves
	code, r := refreshWith(t, gw, otherUserTok, false)
	if code != 200 || r.User != "1002" || r.Sockets != 1 {
		t.Fatalf("1002's refresh: %d %+v, want its one socket moved", code, r)
	}
	var lastExp time.Time
	for time.Since(start) < 2*shortTTL+time.Second {
		code, r := refreshWith(t, gw, tok, true)
		if code != 200 || r.User != "1001" || r.Token == "" {
			t.Fatalf("refresh of 1001's session: %d %+v", code, r)
		}
		if r.Expires.After(lastExp) && r.Sockets != 1 {
			t.Fatalf("a refresh to a later expiry moved %d sockets, want exactly the session's one", r.Sockets)
		}
		tok, lastExp = r.Token, r.Expires
		time.Sleep(time.Second)
	}

	// Long past the original expiry: the other device's socket (same user, another session)
	// and 1002's socket are gone, the refreshed one still carries SIP both ways.
	if time.Now().Before(origExp) {
		t.Fatalf("the test did not run past the original expiry %v", origExp)
	}
	if !otherDevice.closedAtExpiry(time.Second) {
		t.Error("the other device's socket was not closed at its token's expiry")
	}
	if !otherUser.closedAtExpiry(time.Second) {
		t.Error("1002's socket was not closed at its token's expiry")
	}
	eventually(t, time.Second, "the expired sockets are gone", func() bool { return metric(t, gw, "gateway_bridge_sockets") <= 1 })
	if n := metric(t, gw, "gateway_bridge_sockets"); n != 1 {
		t.Fatalf("%v agent sockets open past the original expiry, want the refreshed one", n)
	}
	if got := refreshed.register("1001"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("REGISTER on the refreshed socket past the original expiry: %q", firstLine([]byte(got)))
	}
	if n := metric(t, gw, "gateway_sip_registrations"); n != 1 {
		t.Errorf("%v bindings, want the refreshed agent's one (its flow never closed)", n)
	}

	// Signing out ends the session: its still-valid token cannot refresh.
	req, _ := http.NewRequest("POST", "http://"+gw.HTTPAddr()+"/api/logout", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 {
		t.Fatalf("logout: %d", res.StatusCode)
	}
	// ... and its socket closes at once, long before the token's expiry: an agent signing out
	// leaves no phone registered behind.
	if !refreshed.closedWith("signed out", time.Second) {
		t.Fatal("the signed-out session's socket was not closed at logout")
	}
	if !time.Now().Before(lastExp) {
		t.Fatalf("the test reached the token's expiry %v: the close proves nothing", lastExp)
	}
	for _, cookie := range []bool{true, false} {
		if code, _ := refreshWith(t, gw, tok, cookie); code != 401 {
			t.Errorf("refresh after logout (cookie %v): %d, want 401", cookie, code)
		}
	}
	eventually(t, 2*time.Second, "the binding is gone with the socket", func() bool {
		return metric(t, gw, "gateway_sip_registrations") == 0
	})
}
