package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

func testBridge() *Bridge {
	return New(Config{}, nil, slog.New(slog.DiscardHandler), nil)
}

func sipMsg(callID string, body int) string {
	return fmt.Sprintf("SIP/2.0 200 OK\r\nCall-ID: %s\r\nContent-Length: %d\r\n\r\n%s", callID, body, strings.Repeat("v", body))
}

// The router's stream is cut into one frame per message whatever the reads deliver: several
// messages in one write, a message larger than the read chunk, a message trickled byte-wise
// over many writes, and CRLF keepalives between messages.
func TestFromRouterFraming(t *testing.T) {
	b := testBridge()
	ours, theirs := net.Pipe()
	defer ours.Close()
	out := make(chan []byte, 16)
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	done := make(chan struct{})
	go func() { b.fromRouter(ctx, theirs, out, cancel); close(done) }()

	small1, small2 := sipMsg("a", 0), sipMsg("b", 10)
	big := sipMsg("c", 3*fromRouterChunk+123) // spans four reads
	trickled := sipMsg("d", 40)
	want := []string{small1, small2, big, trickled, small1}
	go func() {
		_, _ = io.WriteString(ours, small1+small2)
		_, _ = io.WriteString(ours, "\r\n\r\n") // keepalive between messages: no frame
		_, _ = io.WriteString(ours, big)
		for i := range len(trickled) {
			_, _ = io.WriteString(ours, trickled[i:i+1])
		}
		_, _ = io.WriteString(ours, small1)
	}()
	for i, w := range want {
		select {
		case got := <-out:
			if !bytes.Equal(got, []byte(w)) {
				t.Fatalf("frame %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got), got, len(w), w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d never came", i)
		}
	}
	select {
	case got := <-out:
		t.Fatalf("unexpected frame %.40q", got)
	default:
	}
	ours.Close()
	<-done
}

// A router stream that never completes a message is cut off once it passes twice the frame
// limit instead of growing without end.
func TestFromRouterUnframed(t *testing.T) {
	b := New(Config{MaxFrame: 1000}, nil, slog.New(slog.DiscardHandler), nil)
	ours, theirs := net.Pipe()
	defer ours.Close()
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	done := make(chan struct{})
	go func() { b.fromRouter(ctx, theirs, make(chan []byte, 1), cancel); close(done) }()
	go func() { _, _ = io.WriteString(ours, "SIP/2.0 200 OK\r\nX: "+strings.Repeat("x", 5000)) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("fromRouter kept reading an unframed stream")
	}
	if err := context.Cause(ctx); err == nil || !strings.Contains(err.Error(), "unframed") {
		t.Fatalf("cause %v, want unframed", err)
	}
}

// An idle agent socket's reader of the router stream holds one small chunk. It used to hold
// 96 KiB (a 64 KiB buffer and a 32 KiB chunk), most of the memory of an idle agent
// (bench/ws-bench.sh).
func TestFromRouterIdleFootprint(t *testing.T) {
	b := testBridge()
	const n = 200
	var pipes []net.Conn
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		ours, theirs := net.Pipe()
		pipes = append(pipes, ours, theirs)
		go b.fromRouter(ctx, theirs, make(chan []byte, 1), cancel)
	}
	time.Sleep(100 * time.Millisecond) // every reader is blocked in its first Read
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	for _, p := range pipes {
		p.Close()
	}
	if per > 8<<10 {
		t.Fatalf("an idle reader allocated %d bytes, want at most 8 KiB", per)
	}
	t.Logf("an idle reader allocated %d bytes", per)
}
