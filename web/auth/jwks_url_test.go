package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// idp is a JWKS endpoint on loopback that counts its hits and can change what it serves.
type idp struct {
	srv    *httptest.Server
	hits   atomic.Int64
	doc    atomic.Pointer[[]byte]
	status atomic.Int64
}

func newIDP(t *testing.T, doc []byte) *idp {
	p := &idp{}
	p.doc.Store(&doc)
	p.status.Store(200)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if s := int(p.status.Load()); s != 200 {
			w.WriteHeader(s)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*p.doc.Load())
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) serve(doc []byte) { p.doc.Store(&doc) }

// fakeClock is advanced by hand so the 30 s re-fetch limit is tested without waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func urlVerifier(t *testing.T, url string, h testHooks) *Verifier {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Algorithms, cfg.JWKSURL, cfg.JWKSRefresh = []string{AlgES256, AlgEdDSA}, url, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := newVerifier(ctx, cfg, quietLog(), h)
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	return v
}

func TestJWKSURLRotation(t *testing.T) {
	k := testKeys()
	p := newIDP(t, jwksDoc(jwkOf("old", &k.ec1.PublicKey, nil)))
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	v := urlVerifier(t, p.srv.URL+"/jwks.json?tenant=x", testHooks{now: clock.now})
	if got := p.hits.Load(); got != 1 {
		t.Fatalf("initial fetches = %d, want 1", got)
	}
	oldTok := sign(t, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "old"}, claims())
	newTok := sign(t, jwt.SigningMethodEdDSA, k.ed1, map[string]any{"kid": "new"}, claims(set("sub", "bob")))
	if res := through(t, v, bearer(oldTok)); res.code != 200 {
		t.Fatalf("old key before rotation: %d %q", res.code, res.errBody)
	}
	if p.hits.Load() != 1 {
		t.Fatal("a known kid caused a fetch")
	}

	// The IdP rotates: the new key appears. The first token naming it forces a re-fetch.
	p.serve(jwksDoc(jwkOf("old", &k.ec1.PublicKey, nil), jwkOf("new", k.ed1.Public(), nil)))
	res := through(t, v, bearer(newTok))
	if res.code != 200 || res.claims.Subject != "bob" {
		t.Fatalf("new kid after rotation: %d %q", res.code, res.errBody)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("fetches after rotation = %d, want 2", got)
	}

	// A burst of tokens with unknown kids inside the 30 s window: no fetch at all.
	burst := func(n int) (refused, ran int64) {
		var wg sync.WaitGroup
		var r, c atomic.Int64
		for i := range n {
			wg.Go(func() {
				tok := sign(t, jwt.SigningMethodES256, k.ec2, map[string]any{"kid": fmt.Sprintf("rand-%d", i)}, claims())
				res := through(t, v, bearer(tok))
				if res.code == 401 && res.errBody == ErrUnknownKey.Error() {
					r.Add(1)
				}
				c.Add(int64(res.calls))
			})
		}
		wg.Wait()
		return r.Load(), c.Load()
	}
	if refused, ran := burst(50); refused != 50 || ran != 0 {
		t.Fatalf("burst: %d refused as unknown key, handler ran %d times", refused, ran)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("fetches after a burst inside the window = %d, want 2", got)
	}

	// Past the window, a concurrent burst costs exactly one fetch.
	clock.advance(31 * time.Second)
	if refused, ran := burst(50); refused != 50 || ran != 0 {
		t.Fatalf("second burst: %d refused, handler ran %d times", refused, ran)
	}
	if got := p.hits.Load(); got != 3 {
		t.Fatalf("fetches after a burst past the window = %d, want 3", got)
	}

	// The old key is withdrawn: once the next fetch (here forced by an unknown kid past the
	// window) brings the new document, tokens under it are refused.
	p.serve(jwksDoc(jwkOf("new", k.ed1.Public(), nil)))
	clock.advance(31 * time.Second)
	through(t, v, bearer(sign(t, jwt.SigningMethodES256, k.ec2, map[string]any{"kid": "unknown"}, claims())))
	if res := through(t, v, bearer(oldTok)); res.code != 401 || res.calls != 0 {
		t.Fatalf("withdrawn key still accepted: %d", res.code)
	}
}

func TestJWKSURLPeriodicRefresh(t *testing.T) {
	k := testKeys()
	p := newIDP(t, jwksDoc(jwkOf("a", &k.ec1.PublicKey, nil)))
	v := urlVerifier(t, p.srv.URL, testHooks{refreshEvery: 20 * time.Millisecond})
	aTok := sign(t, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "a"}, claims())
	bTok := sign(t, jwt.SigningMethodES256, k.ec2, map[string]any{"kid": "b"}, claims())

	p.serve(jwksDoc(jwkOf("a", &k.ec1.PublicKey, nil), jwkOf("b", &k.ec2.PublicKey, nil)))
	waitFor(t, func() bool { _, ok := v.keys.Load().byKid["b"]; return ok })
	if _, err := v.Verify(t.Context(), bTok); err != nil {
		t.Fatalf("key added by a refresh: %v", err)
	}
	if n := v.remote.refetches.Load(); n != 0 {
		t.Fatalf("the refresh loop was not what found the key (%d kid re-fetches)", n)
	}

	// An IdP outage keeps the keys we have.
	p.status.Store(503)
	h := p.hits.Load()
	waitFor(t, func() bool { return p.hits.Load() > h+2 })
	if _, err := v.Verify(t.Context(), aTok); err != nil {
		t.Fatalf("keys lost during an IdP outage: %v", err)
	}
	// So does a document with nothing usable.
	p.status.Store(200)
	p.serve([]byte(`{"keys":[]}`))
	h = p.hits.Load()
	waitFor(t, func() bool { return p.hits.Load() > h+2 })
	if _, err := v.Verify(t.Context(), aTok); err != nil {
		t.Fatalf("keys replaced by an empty document: %v", err)
	}
}

func TestJWKSURLStop(t *testing.T) {
	k := testKeys()
	p := newIDP(t, jwksDoc(jwkOf("a", &k.ec1.PublicKey, nil)))
	cfg := DefaultConfig()
	cfg.Algorithms, cfg.JWKSURL = []string{AlgES256}, p.srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := newVerifier(ctx, cfg, quietLog(), testHooks{refreshEvery: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.hits.Load() >= 3 })
	cancel()
	time.Sleep(20 * time.Millisecond)
	h := p.hits.Load()
	time.Sleep(50 * time.Millisecond)
	if p.hits.Load() != h {
		t.Fatal("refreshes continue after ctx ended")
	}
}

func TestJWKSURLStartup(t *testing.T) {
	k := testKeys()
	good := jwksDoc(jwkOf("a", &k.ec1.PublicKey, nil))
	redirect := httptest.NewServer(http.RedirectHandler("https://example.invalid/jwks", http.StatusFound))
	t.Cleanup(redirect.Close)
	down := newIDP(t, good)
	down.status.Store(500)
	empty := newIDP(t, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	cases := []struct {
		name, url, want string
	}{
		{"IdP answers 500", down.srv.URL, "status 500"},
		{"redirect is not followed", redirect.URL, "status 302"},
		{"no usable key", empty.srv.URL, "none of its 1 keys"},
		{"nothing listening", "http://127.0.0.1:1/jwks", "jwks_url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Algorithms, cfg.JWKSURL = []string{AlgES256}, c.url
			_, err := NewVerifier(t.Context(), cfg, quietLog())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
	t.Run("a waiting request gives up with its context", func(t *testing.T) {
		p := newIDP(t, good)
		v := urlVerifier(t, p.srv.URL, testHooks{})
		v.remote.sem <- struct{}{} // a re-fetch in progress
		defer func() { <-v.remote.sem }()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		_, err := v.Verify(ctx, sign(t, jwt.SigningMethodES256, k.ec1, map[string]any{"kid": "zz"}, claims()))
		if !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("err = %v", err)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
