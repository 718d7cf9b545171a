package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
