package bridge

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pipeRouter hands each attached flow's far end to the test, which plays the SIP router.
type pipeRouter struct{ flows chan net.Conn }

func (r pipeRouter) AttachAgent(string) (net.Conn, error) {
	near, far := net.Pipe()
	r.flows <- far
	return near, nil
}

type served struct {
	ws     *websocket.Conn
	router net.Conn
}

// serveOne opens one agent socket for user/session expiring at exp, through a real WebSocket.
func serveOne(t *testing.T, b *Bridge, flows chan net.Conn, user, session string, exp time.Time) served {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{"sip"}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.Serve(r.Context(), ws, user, session, exp)
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{Subprotocols: []string{"sip"}}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	select {
	case f := <-flows:
		t.Cleanup(func() { f.Close() })
		return served{ws: ws, router: f}
	case <-time.After(2 * time.Second):
		t.Fatal("no flow attached")
	}
	return served{}
}

const optionsFromRouter = "OPTIONS sip:1001@x.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKk1\r\n" +
	"From: <sip:127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: k1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"

// alive reports whether the socket still carries the router's SIP to the browser.
func (s served) alive(t *testing.T) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_ = s.router.SetWriteDeadline(time.Now().Add(time.Second))
		_, err := s.router.Write([]byte(optionsFromRouter))
		done <- err
	}()
	_ = s.ws.SetReadDeadline(time.Now().Add(time.Second))
	_, data, err := s.ws.ReadMessage()
	<-done
	return err == nil && strings.HasPrefix(string(data), "OPTIONS ")
}

// closedExpired waits for the socket's close frame and reports whether it says the token expired.
func (s served) closedExpired(within time.Duration) bool {
	_ = s.ws.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := s.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		return errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation && ce.Text == "token expired"
	}
}

func TestExtendMovesOnlyTheSessionsSockets(t *testing.T) {
	flows := make(chan net.Conn, 4)
	b := New(Config{}, pipeRouter{flows}, slog.New(slog.DiscardHandler), nil)
	exp := time.Now().Add(time.Second)
	mine := serveOne(t, b, flows, "1001", "sess-a", exp)
	otherDevice := serveOne(t, b, flows, "1001", "sess-b", exp)
	otherUser := serveOne(t, b, flows, "1002", "sess-a", exp)

	later := exp.Add(3 * time.Second)
	if n := b.Extend("1001", "sess-a", exp.Add(-time.Second)); n != 0 {
		t.Errorf("an earlier expiry moved %d sockets", n)
	}
	if n := b.Extend("1003", "sess-a", later); n != 0 {
		t.Errorf("a user with no socket moved %d sockets", n)
	}
	if n := b.Extend("1001", "sess-a", later); n != 1 {
		t.Fatalf("Extend moved %d sockets, want 1", n)
	}
	// Past the original expiry, only the extended socket is left, and it still carries SIP.
	if !otherDevice.closedExpired(3*time.Second) || !otherUser.closedExpired(3*time.Second) {
		t.Fatal("the sockets of another session or user were not closed at their own expiry")
	}
	if time.Now().After(later) {
		t.Fatal("the test machine is too slow to tell the deadlines apart")
	}
	if !mine.alive(t) {
		t.Fatal("the extended socket was closed at the original expiry")
	}
	// A later Extend for an older time does not shorten it; it still closes at its new expiry.
	if n := b.Extend("1001", "sess-a", exp); n != 0 {
		t.Errorf("an older token moved %d sockets", n)
	}
	if !mine.closedExpired(5 * time.Second) {
		t.Fatal("the extended socket was not closed at its new expiry")
	}
	if time.Now().Before(later) {
		t.Error("the extended socket closed before its new expiry")
	}
	// Closed sockets leave the registry.
	deadline := time.Now().Add(2 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.live)
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still registered after every socket closed", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A deadline that fires while an extension races it re-checks the time and waits on.
func TestDeadlineExtendRace(t *testing.T) {
	for range 50 {
		fired := make(chan struct{})
		d := newDeadline(time.Now().Add(time.Millisecond), func(error) { close(fired) })
		if d.extend(time.Now().Add(time.Hour)) {
			select {
			case <-fired:
				t.Fatal("the deadline fired after a successful extension")
			case <-time.After(20 * time.Millisecond):
			}
		} else {
			select {
			case <-fired:
			case <-time.After(2 * time.Second):
				t.Fatal("the deadline was neither extended nor fired")
			}
		}
		d.stop()
	}
}
