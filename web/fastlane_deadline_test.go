package web

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// trickle sends head on c, then one more header line every step, until the server closes the
// connection or giveUp passes; it returns how long after the head the server closed
// (giveUp when it never did). Before each line it sends after at, it sends switchTo instead
// of the usual filler, once (to make the fast lane hand the connection over mid-head).
func trickle(t *testing.T, c net.Conn, head string, step, giveUp, at time.Duration, switchTo string) time.Duration {
	t.Helper()
	closed := make(chan time.Time, 1)
	go func() {
		_, _ = io.Copy(io.Discard, c) // until EOF or reset: the server gave up on the request
		closed <- time.Now()
	}()
	start := time.Now()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(step)
	defer tick.Stop()
	switched := switchTo == ""
	for {
		select {
		case end := <-closed:
			return end.Sub(start)
		case now := <-tick.C:
			if now.Sub(start) > giveUp {
				return giveUp
			}
			line := "X-Slow: a\r\n"
			if !switched && now.Sub(start) >= at {
				line, switched = switchTo, true
			}
			_, _ = io.WriteString(c, line) // may fail once the server closed: the reader reports it
		}
	}
}

// TestFastLaneHeaderTimeoutPerRequest: read_header bounds the time a request head may take as a
// whole, as in net/http (a deadline per request, not per read): a client sending its head a
// line at a time within the timeout is cut off once the timeout has passed since the request
// started, on a new connection and on a kept-alive one.
func TestFastLaneHeaderTimeoutPerRequest(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.Timeouts.ReadHeader = 400 * time.Millisecond
	cfg.Timeouts.Idle = 5 * time.Second
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	_, refAddr := refServer(t, cfg, slog.New(slog.DiscardHandler))
	const head = "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n"
	for _, srv := range []struct{ name, addr string }{{"fast lane", s.Addr().String()}, {"net/http", refAddr}} {
		t.Run(srv.name+"/new connection", func(t *testing.T) {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if d := trickle(t, c, head, 100*time.Millisecond, 3*time.Second, 0, ""); d > 1200*time.Millisecond {
				t.Errorf("a head sent a line per 100ms still open after %v; read_header is 400ms", d)
			}
		})
		t.Run(srv.name+"/kept alive", func(t *testing.T) {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = io.WriteString(c, head+"\r\n")
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != 200 {
				t.Fatal(res, err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = c.SetReadDeadline(time.Time{})
			time.Sleep(600 * time.Millisecond) // idle longer than read_header: idle_timeout applies here
			if d := trickle(t, readerConn{c, br}, head, 100*time.Millisecond, 3*time.Second, 0, ""); d > 1200*time.Millisecond {
				t.Errorf("second head sent a line per 100ms still open after %v; read_header is 400ms", d)
			}
		})
	}
}

// TestFastLaneHandoverKeepsHeaderDeadline: a request the lane started to read and then hands
// over keeps its header deadline; net/http does not start it again, so the lane cannot double
// the time a slow client may take over a head.
func TestFastLaneHandoverKeepsHeaderDeadline(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.Timeouts.ReadHeader = time.Second
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// At 700ms a Content-Length line makes it net/http's; the head started at 0.
	d := trickle(t, c, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n", 100*time.Millisecond, 4*time.Second,
		700*time.Millisecond, "Content-Length: 0\r\n")
	if s.fast.handovers.Load() != 1 {
		t.Fatalf("%d handovers, want 1", s.fast.handovers.Load())
	}
	if d > 1500*time.Millisecond {
		t.Errorf("head still open after %v; read_header is 1s from its first byte", d)
	}
}

// readerConn reads through a bufio.Reader that may hold bytes already read from the conn.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestFastLanePipelinedHandoverDeadline: a request pipelined after one the lane answers has
// its own header deadline from that answer on, as in net/http, also when the lane hands it
// over at once (here a POST whose head is not complete yet).
func TestFastLanePipelinedHandoverDeadline(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.Timeouts.ReadHeader = time.Second
	s := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	_, refAddr := refServer(t, cfg, slog.New(slog.DiscardHandler))
	for _, srv := range []struct{ name, addr string }{{"fast lane", s.Addr().String()}, {"net/http", refAddr}} {
		t.Run(srv.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The first request arrives late in its connection's header timeout; the second
			// head is finished 400ms after the first was answered, past the first's deadline.
			time.Sleep(800 * time.Millisecond)
			_, _ = io.WriteString(c, "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\nPOST /api/logout HTTP/1.1\r\nHost: x\r\n")
			time.Sleep(400 * time.Millisecond)
			_, _ = io.WriteString(c, "Content-Length: 0\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			for i := range 2 {
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i+1, err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
			}
		})
	}
}

// TestFastLaneKeepAlivePeek: on a kept-alive connection net/http waits, under the idle timeout,
// for 4 bytes of the next request before it starts reading it; the lane does the same. Fewer
// bytes and EOF close quietly (no 400), and a next request's first 3 bytes do not start its
// header timeout.
func TestFastLaneKeepAlivePeek(t *testing.T) {
	cfg := Defaults()
	cfg.JWT = testJWTConfig(t)
	cfg.RateLimit.PerIP, cfg.RateLimit.MaxConnsPerIP = 0, 0
	cfg.Timeouts.ReadHeader = 300 * time.Millisecond
	cfg.Timeouts.Idle = 5 * time.Second
	lane := laneServer(t, cfg, slog.New(slog.DiscardHandler))
	_, refAddr := refServer(t, cfg, slog.New(slog.DiscardHandler))
	const get = "GET /admin/admin.js HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, in := range []string{get + "0", get + "00", get + "GET", get + "GET ", get + "\r\n\r", get + "\r\n\r\n", get + "GET /adm"} {
		if got, want := exchange(t, lane.Addr().String(), in), exchange(t, refAddr, in); got != want {
			t.Errorf("%q: fast lane %d bytes, net/http %d:\n%.200q\n%.200q", in, len(got), len(want), got[min(len(got), len(want)):], want[min(len(got), len(want)):])
		}
	}
	for _, srv := range []struct{ name, addr string }{{"fast lane", lane.Addr().String()}, {"net/http", refAddr}} {
		t.Run(srv.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			_, _ = io.WriteString(c, get+"GE")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			time.Sleep(600 * time.Millisecond) // twice read_header, well within idle
			_, _ = io.WriteString(c, get[2:])
			if res, err = http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
				t.Fatalf("second request, started 600ms before its 4th byte: %v %v", res, err)
			}
		})
	}
}
