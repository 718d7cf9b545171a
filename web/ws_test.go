package web

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// heldSockets keeps every adopted socket open, as the bridge does, until the test ends it or
// the server stops.
type heldSockets struct {
	fakeSockets
	mu  sync.Mutex
	end []func()
}

func (h *heldSockets) Adopt(ctx context.Context, ws *websocket.Conn, _, _ string, _ time.Time, done func()) {
	var once sync.Once
	end := func() { once.Do(func() { ws.Close(); done() }) }
	context.AfterFunc(ctx, end)
	h.mu.Lock()
	h.end = append(h.end, end)
	h.mu.Unlock()
}

// The per-user socket cap: past ws_per_user open sockets the user's next upgrade gets 429 with
// Retry-After, counted in gateway_http_rate_limited_total{limit="ws_per_user"}; another user is
// not affected, and a socket that closes makes room again.
func TestWSPerUserCap(t *testing.T) {
	held := &heldSockets{}
	s := startServer(t, func(c *Config) { c.RateLimit.WSPerUser, c.RateLimit.WSPerMinute = 2, 600 }, Deps{Agents: held})
	base := "http://" + s.Addr().String()
	upgrade := func(user string) (*websocket.Conn, int, string) {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"sip"}, HandshakeTimeout: 2 * time.Second}
		h := http.Header{"Authorization": {"Bearer " + token(t, s, user, "agent")}, "Origin": {base}}
		ws, res, err := d.Dial("ws://"+s.Addr().String()+"/ws", h)
		if err == nil {
			t.Cleanup(func() { ws.Close() })
			return ws, http.StatusSwitchingProtocols, ""
		}
		if res == nil {
			t.Fatalf("upgrade for %s: %v", user, err)
		}
		return nil, res.StatusCode, res.Header.Get("Retry-After")
	}
	for i := range 2 {
		if _, code, _ := upgrade("1001"); code != 101 {
			t.Fatalf("1001's socket %d: %d, want 101", i+1, code)
		}
	}
	if _, code, retry := upgrade("1001"); code != 429 || retry != "5" {
		t.Fatalf("1001's third socket: %d (Retry-After %q), want 429 with Retry-After 5", code, retry)
	}
	if n := testutil.ToFloat64(s.m.limited.WithLabelValues("ws_per_user", defaultClass)); n != 1 {
		t.Errorf("ws_per_user refusals counted: %v, want 1", n)
	}
	if _, code, _ := upgrade("1002"); code != 101 {
		t.Fatalf("another user at 1001's cap: %d, want 101", code)
	}
	held.mu.Lock()
	first := held.end[0]
	held.mu.Unlock()
	first() // one of 1001's sockets closes
	if _, code, _ := upgrade("1001"); code != 101 {
		t.Fatalf("1001 after one of its sockets closed: %d, want 101", code)
	}
}

// Stopping the server closes the agent sockets it handed over and waits until every one has
// closed: Stop returns only after each socket's done.
func TestStopClosesAdoptedSockets(t *testing.T) {
	held := &heldSockets{}
	s := startServer(t, nil, Deps{Agents: held})
	base := "http://" + s.Addr().String()
	d := websocket.Dialer{Subprotocols: []string{"sip"}, HandshakeTimeout: 2 * time.Second}
	ws, _, err := d.Dial("ws://"+s.Addr().String()+"/ws",
		http.Header{"Authorization": {"Bearer " + token(t, s, "1001", "agent")}, "Origin": {base}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if s.ws.adopt() {
		t.Fatal("the stopped server still takes sockets")
	}
	_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _, err = ws.ReadMessage()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the socket after Stop: %v, want it closed", err)
	}
}
