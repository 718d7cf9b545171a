package web

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/static"
)

// chunkConn is a client that sends its chunks one Read each, then waits (as an idle client
// would) until closed. It keeps what the server writes.
type chunkConn struct {
	mu      sync.Mutex
	chunks  [][]byte
	out     bytes.Buffer
	drained chan struct{} // closed when a Read finds no chunk left
	closed  chan struct{}
	dOnce   sync.Once
	cOnce   sync.Once
}

func newChunkConn(chunks ...[]byte) *chunkConn {
	return &chunkConn{chunks: chunks, drained: make(chan struct{}), closed: make(chan struct{})}
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.chunks) > 0 {
		n := copy(p, c.chunks[0])
		if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
			c.chunks = c.chunks[1:]
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	c.dOnce.Do(func() { close(c.drained) })
	<-c.closed
	return 0, net.ErrClosed
}

// unread is what the client sent that no Read has returned yet.
func (c *chunkConn) unread() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.chunks, nil)
}

func (c *chunkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *chunkConn) written() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return dateLine.ReplaceAllString(c.out.String(), "Date: (date)\r")
}

func (c *chunkConn) Close() error {
	c.cOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *chunkConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (c *chunkConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
}
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// idleListener accepts nothing until closed.
type idleListener struct {
	done chan struct{}
	once sync.Once
}

func (l *idleListener) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l *idleListener) Close() error              { l.once.Do(func() { close(l.done) }); return nil }
func (l *idleListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

// laneOutcome is what the lane did with one client: its answers (Date blanked) and, when it
// handed the connection over, the byte stream net/http reads from it.
type laneOutcome struct {
	answers  string
	handed   bool
	replayed string
}

// runLane serves one scripted client with the lane until it hands the connection over or waits
// for more input.
func runLane(t *testing.T, l *fastLane, sc *chunkConn) laneOutcome {
	t.Helper()
	l.wg.Add(1)
	l.mu.Lock()
	fc := &fastConn{Conn: sc}
	l.conns[fc] = struct{}{}
	l.mu.Unlock()
	finished := make(chan struct{})
	go func() { l.serve(fc); close(finished) }()
	var out laneOutcome
	select {
	case hc := <-l.handoff:
		out.handed = true
		if rc, ok := hc.(*replayConn); ok {
			out.replayed = string(rc.pending)
		}
		out.replayed += string(sc.unread())
	case <-sc.drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the lane neither handed over nor waited for input")
	}
	out.answers = sc.written()
	_ = sc.Close()
	<-finished
	if w := sc.written(); w != out.answers {
		t.Fatalf("the lane wrote after handing over: %q", w[len(out.answers):])
	}
	return out
}

// TestFastLaneSplitReads: however the client's bytes are cut into reads, the lane answers the
// same requests with the same bytes and hands over the same rest of the stream, once, in order.
func TestFastLaneSplitReads(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.RateLimit.PerIP = 0
	reg := prometheus.NewRegistry()
	s, err := New(context.Background(), cfg, Deps{Static: static.Files, Metrics: reg}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.newFastLane(&idleListener{done: make(chan struct{})}, s.staticPaths(s.router()))
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	defer l.Close()
	etag := s.static.assets["/admin/admin.js"].plain.etag[0]
	const (
		get  = "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"
		gz   = "GET /admin/ HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nX-Request-Id: r\r\n\r\n"
		head = "HEAD /common/common.css HTTP/1.1\r\nHost: x\r\n\r\n"
	)
	inm := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n"
	long := "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", fastHeadMax-60) + "\r\n\r\n"
	for _, tc := range []struct {
		name, input string
		handed      bool
		answers     int
	}{
		{"pipelined static", get + gz + head + inm, false, 4},
		{"static then partial", get + "GET /admin/admin.js HTTP/1.1\r\nHo", false, 1},
		{"handover mid-pipeline", get + gz + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + get, true, 2},
		{"handover at a body", get + "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" + get, true, 1},
		{"handover at smuggling", head + "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get, true, 1},
		{"head near the limit", get + long + get, false, 3},
		{"head over the limit", get + strings.Replace(long, "X-Pad: ", "X-Pad: "+strings.Repeat("m", 100), 1) + get, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := runLane(t, l, newChunkConn([]byte(tc.input)))
			if want.handed != tc.handed || strings.Count(want.answers, "HTTP/1.1 ") != tc.answers {
				t.Fatalf("in one read: handed over %v, %d answers; want %v, %d", want.handed,
					strings.Count(want.answers, "HTTP/1.1 "), tc.handed, tc.answers)
			}
			check := func(how string, got laneOutcome) {
				t.Helper()
				if got != want {
					t.Fatalf("%s: handed %v replayed %.80q answers %d bytes; in one read: handed %v replayed %.80q answers %d bytes",
						how, got.handed, got.replayed, len(got.answers), want.handed, want.replayed, len(want.answers))
				}
			}
			in := []byte(tc.input)
			for i := 1; i < len(in); i++ {
				// Long inputs: every split near the 4 KiB mark and near where a request ends,
				// and a sample of the others.
				if len(in) > 1024 && i%61 != 0 && !nearBoundary(tc.input, i) {
					continue
				}
				check("split at "+strconv.Itoa(i), runLane(t, l, newChunkConn(in[:i], in[i:])))
			}
			var bytewise [][]byte
			for i := range in {
				bytewise = append(bytewise, in[i:i+1])
			}
			check("a byte per read", runLane(t, l, newChunkConn(bytewise...)))
			if want.handed {
				// The replayed stream is the input from the first request not answered.
				if !strings.HasSuffix(tc.input, want.replayed) || want.replayed == "" {
					t.Fatalf("replayed %.80q is not the end of the input", want.replayed)
				}
			}
		})
	}
}

// nearBoundary reports whether i is within a few bytes of the end of a head, of the end of a
// line, or of a multiple of fastHeadMax in s.
func nearBoundary(s string, i int) bool {
	for d := -3; d <= 3; d++ {
		j := i + d
		if j <= 0 || j >= len(s) {
			continue
		}
		if j%fastHeadMax == 0 || strings.HasSuffix(s[:j], "\r\n") {
			return true
		}
	}
	return false
}
