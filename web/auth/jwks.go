package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// fetchTimeout bounds one JWKS fetch. A kid-triggered re-fetch runs on a request's path, so
// this is also the longest a request can wait on the IdP.
const fetchTimeout = 5 * time.Second

// remoteJWKS follows an IdP's published keys. Periodic refreshes pick up additions; a token
// naming an unknown kid forces an early re-fetch so a rotation works at once, limited to one
// per refetchEvery so random kids cannot make us hammer the IdP.
type remoteJWKS struct {
	v      *Verifier
	url    string
	shown  string // redacted, for logs and errors
	client *http.Client
	base   context.Context // ends the refresh loop and aborts fetches at shutdown

	now          func() time.Time
	refetchEvery time.Duration

	// sem serialises kid-triggered re-fetches (waiters honour their own ctx) and guards last.
	sem  chan struct{}
	last time.Time

	refetches atomic.Int64 // kid-triggered fetches, for tests
}

func newRemoteJWKS(ctx context.Context, v *Verifier, h testHooks) *remoteJWKS {
	u, _ := url.Parse(v.cfg.JWKSURL) // Validate has parsed it
	tr := http.DefaultTransport.(*http.Transport).Clone()
	r := &remoteJWKS{
		v:     v,
		url:   v.cfg.JWKSURL,
		shown: redactURL(u),
		client: &http.Client{
			Transport: tr,
			Timeout:   fetchTimeout,
			// A redirect could leave https or loopback; the configured URL must be the document.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		base:         ctx,
		now:          time.Now,
		refetchEvery: minRefetchInterval,
		sem:          make(chan struct{}, 1),
	}
	if h.now != nil {
		r.now = h.now
	}
	if h.refetchEvery > 0 {
		r.refetchEvery = h.refetchEvery
	}
	return r
}

func (r *remoteJWKS) initial() error {
	ks, err := r.fetch()
	if err != nil {
		return err
	}
	r.v.keys.Store(ks)
	return nil
}

// loop keeps the previous keys when a refresh fails: an IdP outage must not log everyone out.
func (r *remoteJWKS) loop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.base.Done():
			return
		case <-t.C:
			if ks, err := r.fetch(); err != nil {
				r.v.log.Warn("jwks refresh failed; keeping the previous keys", "url", r.shown, "error", err)
			} else {
				r.v.keys.Store(ks)
				r.v.log.Debug("jwks refreshed", "url", r.shown, "keys", ks.n)
			}
		}
	}
}

// refetchFor is called for a kid not in the current set.
func (r *remoteJWKS) refetchFor(ctx context.Context, kid string) (pubKey, bool) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return pubKey{}, false
	}
	defer func() { <-r.sem }()
	// A request that waited on the semaphore may find the kid already fetched by another.
	if k, ok := r.v.keys.Load().byKid[kid]; ok {
		return k, true
	}
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < r.refetchEvery {
		return pubKey{}, false
	}
	r.last = now // failures count too, or a down IdP would be retried on every request
	r.refetches.Add(1)
	ks, err := r.fetch()
	if err != nil {
		r.v.log.Warn("jwks re-fetch for an unknown kid failed", "url", r.shown, "error", err)
		return pubKey{}, false
	}
	r.v.keys.Store(ks)
	k, ok := ks.byKid[kid]
	r.v.log.Info("jwks re-fetched for an unknown kid", "url", r.shown, "keys", ks.n, "kid_found", ok)
	return k, ok
}

// fetch uses the verifier's ctx, not a request's: other requests wait on the result, and one
// client hanging up must not cancel it for them.
func (r *remoteJWKS) fetch() (*keySet, error) {
	ctx, cancel := context.WithTimeout(r.base, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks_url %s: %w", r.shown, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the full URL, query included
		}
		return nil, fmt.Errorf("jwks_url %s: %w", r.shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks_url %s: status %s", r.shown, resp.Status)
	}
	body, err := readAllLimited(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("jwks_url %s: %w", r.shown, err)
	}
	keys, err := parseJWKS(body, r.v.cfg.Algorithms, r.v.log)
	if err != nil {
		return nil, fmt.Errorf("jwks_url %s: %w", r.shown, err)
	}
	return newKeySet(keys)
}
