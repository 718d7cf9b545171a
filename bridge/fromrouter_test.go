package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

func sipMsg(callID string, body int) string {
	return fmt.Sprintf("SIP/2.0 200 OK\r\nCall-ID: %s\r\nContent-Length: %d\r\n\r\n%s", callID, body, strings.Repeat("v", body))
}

func testFramer(t *testing.T, limit, queue int) (*framer, chan []byte, context.Context) {
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	out := make(chan []byte, queue)
	send := func(frame []byte) error { out <- frame; return nil }
	return &framer{send: send, limit: limit, m: newMetrics(nil), cancel: cancel}, out, ctx
}

// The router's stream is cut into one frame per message whatever its writes hold: several
// messages in one write, a message far larger than any frame buffer, a message trickled
// byte-wise over many writes, and CRLF keepalives between messages. Each frame is a copy:
// the router reuses what it wrote.
func TestFramerFraming(t *testing.T) {
	f, out, _ := testFramer(t, 1<<20, 16)
	small1, small2 := sipMsg("a", 0), sipMsg("b", 10)
	big := sipMsg("c", 50_000)
	trickled := sipMsg("d", 40)
	want := []string{small1, small2, big, trickled, small1}
	write := func(s string) {
		buf := []byte(s)
		if n, err := f.Write(buf); err != nil || n != len(buf) {
			t.Fatalf("write: %d, %v", n, err)
		}
		clear(buf) // as the router's buffer pool would
	}
	write(small1 + small2)
	write("\r\n\r\n") // keepalive between messages: no frame
	write(big[:1000])
	write(big[1000:])
	for i := range len(trickled) {
		write(trickled[i : i+1])
	}
	write("\r\n" + small1)
	for i, w := range want {
		select {
		case got := <-out:
			if !bytes.Equal(got, []byte(w)) {
				t.Fatalf("frame %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got), got, len(w), w)
			}
		default:
			t.Fatalf("frame %d never came", i)
		}
	}
	select {
	case got := <-out:
		t.Fatalf("unexpected frame %.40q", got)
	default:
	}
	if f.pending != nil {
		t.Errorf("%d bytes kept after whole messages", len(f.pending))
	}
}

// A router stream that never completes a message is cut off once it passes the limit instead
// of growing without end.
func TestFramerUnframed(t *testing.T) {
	f, _, ctx := testFramer(t, 2000, 1)
	_, err := io.WriteString(f, "SIP/2.0 200 OK\r\nX: "+strings.Repeat("x", 5000))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write of an unframed stream: %v, want net.ErrClosed", err)
	}
	if err := context.Cause(ctx); err == nil || !strings.Contains(err.Error(), "unframed") {
		t.Fatalf("cause %v, want unframed", err)
	}
}

const regFrame = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKr1\r\nFrom: <sip:1001@127.0.0.1>;tag=a\r\n" +
	"To: <sip:1001@127.0.0.1>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"

// One SIP message per frame: the router reads the agent's flow as a stream, so anything after
// the message would be read as more messages that passed no check. Such a frame is refused
// whole with 400; trailing CRLFs are let go; Content-Length values that cannot frame a
// message (negative, huge, not a number) are refused without harm.
func TestCheckOneMessagePerFrame(t *testing.T) {
	b := testBridge()
	msg, answer := b.check([]byte(regFrame+"\r\n"), "1001")
	if string(msg) != regFrame || answer != nil {
		t.Fatalf("a message and a CRLF: passed %q, answered %q", msg, answer)
	}
	smuggled := regFrame + strings.Replace(regFrame, "1001", "1002", 3)
	msg, answer = b.check([]byte(smuggled), "1001")
	if msg != nil || !strings.HasPrefix(string(answer), "SIP/2.0 400 Bad Request: One Message Per Frame\r\n") {
		t.Fatalf("two messages in a frame: passed %q, answered %q", msg, answer)
	}
	for _, cl := range []string{"-100000", "9223372036854775807", "99999999999999999999", "x"} {
		frame := strings.Replace(regFrame, "Content-Length: 0", "Content-Length: "+cl, 1) + "body"
		msg, answer := b.check([]byte(frame), "1001")
		if msg != nil {
			t.Errorf("Content-Length %s: passed %q (answer %q)", cl, msg, answer)
		}
	}
}

func testBridge() *Bridge {
	return New(Config{}, nil, slog.New(slog.DiscardHandler), nil)
}

// A frame waits for room in a full queue at most slowConsumer; then the socket ends, so a
// browser that stops reading cannot hold the router's goroutine that writes to it.
func TestSendGivesUpOnASlowBrowser(t *testing.T) {
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	s := &socket{b: testBridge(), ctx: ctx, cancel: cancel, out: make(chan []byte, 2)}
	s.writing.Store(true) // a writer is stuck on the browser: nothing drains the queue
	for range 2 {
		if err := s.send([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.send([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send to a full queue: %v, want net.ErrClosed", err)
	}
	if !errors.Is(context.Cause(ctx), errSlowConsumer) {
		t.Fatalf("socket ended with %v, want %v", context.Cause(ctx), errSlowConsumer)
	}
}
