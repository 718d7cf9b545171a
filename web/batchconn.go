package web

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
)

// batchConn lets a handler send a whole response in one write.
//
// net/http writes a response through a 4 KiB buffer: a header and body larger than that leave
// in two write calls, so two TCP segments and two wake-ups of the client, and under TLS two
// records sent apart. nginx avoids this with TCP_NOPUSH. A handler that knows its complete
// response (the static files) holds the connection, writes and flushes, then releases it: the
// held bytes go out in one write, in the order they were written. Every other write passes
// straight through.
//
// It sits below TLS (records are gathered, not plaintext) and only serves HTTP/1.x, where the
// handler's goroutine is the one writing the response. Under TLS the connection's reader may
// write too (a key update reply), hence the lock.
type batchConn struct {
	net.Conn

	mu   sync.Mutex
	held *[]byte // the bytes written since hold; nil when not held
	err  error   // a failed batched send, returned by every later write
}

// A handler batches bodies from minBatch to maxBatch bytes. Smaller ones leave in one write
// anyway (headers and body fit net/http's buffer); bigger ones are sent as net/http writes
// them (the extra write is small beside the copy).
const (
	minBatch = 2 << 10
	maxBatch = 64 << 10
)

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.held != nil && c.err == nil {
		*c.held = append(*c.held, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// hold starts gathering writes; release sends them.
func (c *batchConn) hold() {
	c.mu.Lock()
	if c.held == nil {
		c.held = batchBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// release sends what was written since hold in one write and stops gathering.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.held
	if b == nil {
		return c.err
	}
	c.held = nil
	if len(*b) > 0 && c.err == nil {
		_, c.err = c.Conn.Write(*b)
	}
	if cap(*b) <= 2*maxBatch {
		*b = (*b)[:0]
		batchBufs.Put(b)
	}
	return c.err
}

// ReadFrom keeps the kernel's sendfile/splice path (net/http uses it for io.Copy into a
// response) when nothing is held.
func (c *batchConn) ReadFrom(r io.Reader) (int64, error) {
	c.mu.Lock()
	held, err := c.held != nil, c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok && !held {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c}, r)
}

type writerOnly struct{ io.Writer }

// CloseWrite half-closes the connection when the one below can (net/http uses it).
func (c *batchConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// batchListener wraps every accepted connection in a batchConn.
type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

type batchConnKey struct{}

// withBatchConn is the server's ConnContext: it makes the connection's batchConn reachable
// from its requests' contexts.
func withBatchConn(ctx context.Context, c net.Conn) context.Context {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if b, ok := c.(*batchConn); ok {
		return context.WithValue(ctx, batchConnKey{}, b)
	}
	return ctx
}

// batchConnOf is the request's connection when its response may be batched: HTTP/1.x over
// a batchConn.
func batchConnOf(r *http.Request) *batchConn {
	if r.ProtoMajor != 1 {
		return nil
	}
	b, _ := r.Context().Value(batchConnKey{}).(*batchConn)
	return b
}
