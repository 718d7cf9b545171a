package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeRouter hands each attached flow to the test, which plays the SIP router. Like the real
// router it reads each flow on a goroutine of its own, and cuts what it reads into messages.
type fakeRouter struct{ flows chan *fakeFlow }

// fakeFlow is the router's side of one agent flow.
type fakeFlow struct {
	toAgent   io.Writer
	agent     io.Closer
	fromAgent chan []byte
	once      sync.Once
}

func (r fakeRouter) AttachAgent(_ string, agent io.ReadWriteCloser) (io.Closer, error) {
	f := &fakeFlow{toAgent: agent, agent: agent, fromAgent: make(chan []byte, 16)}
	go func() {
		defer f.Close()
		var buf []byte
		chunk := make([]byte, 100) // small: messages arrive over several reads
		for {
			n, err := agent.Read(chunk)
			if err != nil {
				return
			}
			buf = append(buf, chunk[:n]...)
			for {
				msg, rest, ok := nextMessage(buf)
				if !ok {
					break
				}
				f.fromAgent <- bytes.Clone(msg)
				buf = rest
			}
		}
	}()
	r.flows <- f
	return f, nil
}

func (f *fakeFlow) Close() error {
	f.once.Do(func() { f.agent.Close() })
	return nil
}

type served struct {
	ws     *websocket.Conn
	router *fakeFlow
}

// serveOne opens one agent socket for user/session expiring at exp, through a real WebSocket.
func serveOne(t *testing.T, b *Bridge, flows chan *fakeFlow, user, session string, exp time.Time) served {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{"sip"}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.Adopt(t.Context(), ws, user, session, exp, func() {})
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
		_, err := s.router.toAgent.Write([]byte(optionsFromRouter))
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
	flows := make(chan *fakeFlow, 4)
	b := New(Config{}, fakeRouter{flows}, slog.New(slog.DiscardHandler), nil)
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

// The socket carries SIP both ways, and it ends when the router ends the flow: the browser
// gets a close, and the flow is not left open on the router's side either.
func TestSocketFollowsTheFlow(t *testing.T) {
	flows := make(chan *fakeFlow, 1)
	b := New(Config{}, fakeRouter{flows}, slog.New(slog.DiscardHandler), nil)
	s := serveOne(t, b, flows, "1001", "", time.Time{})
	if !s.alive(t) {
		t.Fatal("the router's OPTIONS did not reach the browser")
	}
	reg := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKr1\r\nFrom: <sip:1001@127.0.0.1>;tag=a\r\n" +
		"To: <sip:1001@127.0.0.1>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\r\n"
	if err := s.ws.WriteMessage(websocket.TextMessage, []byte(reg)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-s.router.fromAgent:
		if !strings.HasPrefix(string(got), "REGISTER ") || !strings.Contains(string(got), "\r\nContent-Length: 0\r\n") {
			t.Fatalf("router got %q, want the REGISTER with a Content-Length added", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the browser's REGISTER never reached the router")
	}
	s.router.Close()
	_ = s.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := s.ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the socket stayed open after the router ended its flow")
			}
			break
		}
	}
}

// Frames to the browser from several router goroutines at once all arrive, each sender's in
// its order: the writer that drains the queue is started and stopped as frames come and go,
// and never runs twice at once (gorilla panics on concurrent writes).
func TestWriterDeliversEveryFrameInOrder(t *testing.T) {
	flows := make(chan *fakeFlow, 1)
	b := New(Config{}, fakeRouter{flows}, slog.New(slog.DiscardHandler), nil)
	s := serveOne(t, b, flows, "1001", "", time.Time{})
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				if i%50 == 0 {
					time.Sleep(5 * time.Millisecond) // let the queue run dry now and then
				}
				msg := fmt.Sprintf("OPTIONS sip:1001@x.invalid SIP/2.0\r\nCall-ID: %d-%d\r\nContent-Length: 0\r\n\r\n", g, i)
				if _, err := s.router.toAgent.Write([]byte(msg)); err != nil {
					t.Errorf("sender %d frame %d: %v", g, i, err)
					return
				}
			}
		})
	}
	next := make([]int, senders)
	_ = s.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range senders * each {
		_, data, err := s.ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %v frames: %v", next, err)
		}
		var g, i int
		if _, err := fmt.Sscanf(string(data[strings.Index(string(data), "Call-ID: ")+9:]), "%d-%d", &g, &i); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		if i != next[g] {
			t.Fatalf("sender %d: frame %d arrived when %d was due", g, i, next[g])
		}
		next[g]++
	}
	wg.Wait()
}

// CRLF keepalives (up to 4 bytes) are free; any other frame of whitespace counts against the
// socket's message rate like a message, so a flood of them closes the socket.
func TestWhitespaceFramesAreRated(t *testing.T) {
	flows := make(chan *fakeFlow, 2)
	b := New(Config{Rate: 1, Burst: 5}, fakeRouter{flows}, slog.New(slog.DiscardHandler), nil)
	s := serveOne(t, b, flows, "1001", "", time.Time{})
	for range 50 {
		if err := s.ws.WriteMessage(websocket.TextMessage, []byte("\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if !s.alive(t) {
		t.Fatal("50 CRLF keepalives closed the socket")
	}
	flooded := serveOne(t, b, flows, "1001", "", time.Time{})
	for range 50 {
		if err := flooded.ws.WriteMessage(websocket.TextMessage, []byte(strings.Repeat(" ", 100))); err != nil {
			break // closed under us
		}
	}
	_ = flooded.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		_, _, err := flooded.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("50 frames of spaces: %v, want a policy close for flooding", err)
		}
		break
	}
}
