package web

import (
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
)

// accounts is a fixed set of logins standing in for the users file behind Accounts.
type accounts map[string]string

func (a accounts) Authenticate(name, password string) ([]string, bool) {
	if p, ok := a[name]; ok && p == password {
		return a.Roles(name)
	}
	return nil, false
}

func (a accounts) Roles(name string) ([]string, bool) {
	if _, ok := a[name]; !ok {
		return nil, false
	}
	if name == "admin" {
		return []string{"admin"}, true
	}
	return []string{"agent"}, true
}

func loginReq(t *testing.T, base, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/login", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := clientFrom("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

func TestLogin(t *testing.T) {
	s := startServer(t, func(c *Config) { c.RateLimit.LoginPerMinute = 600 }, Deps{Accounts: accounts{"admin": "right-password", "1001": "agent-password"}, Admin: &fakeAdmin{state: map[string]string{}}})
	base := "http://" + s.Addr().String()

	res := loginReq(t, base, `{"username":"admin","password":"right-password"}`, nil)
	if res.StatusCode != 200 {
		t.Fatalf("right password: %d", res.StatusCode)
	}
	var cookie *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "dualgate_session" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Value == "" {
		t.Fatalf("session cookie = %+v", cookie)
	}
	// The cookie is a working session: /api/me and the admin API accept it.
	for _, path := range []string{"/api/me", "/api/admin/dispatcher"} {
		if code, body := do(t, "GET", base+path, "", map[string]string{"Cookie": "dualgate_session=" + cookie.Value}); code != 200 {
			t.Errorf("%s with the session cookie: %d %s", path, code, body)
		}
	}
	if res := loginReq(t, base, `{"username":"admin","password":"wrong"}`, nil); res.StatusCode != 401 {
		t.Errorf("wrong password: %d", res.StatusCode)
	}
	if res := loginReq(t, base, `{"username":"admin","password":"right-password"}`, map[string]string{"Origin": "http://evil.example"}); res.StatusCode != 403 {
		t.Errorf("cross-origin login: %d, want 403", res.StatusCode)
	}
	if res := loginReq(t, base, `{"user":"admin"}`, nil); res.StatusCode != 400 {
		t.Errorf("malformed body: %d", res.StatusCode)
	}

	// Repeated failures lock the name out, even for the right password; other names are unaffected.
	for range lockoutAfter {
		loginReq(t, base, `{"username":"1001","password":"guess"}`, nil)
	}
	locked := loginReq(t, base, `{"username":"1001","password":"agent-password"}`, nil)
	if locked.StatusCode != 429 || locked.Header.Get("Retry-After") == "" {
		t.Errorf("after %d failures: %d (Retry-After %q), want 429", lockoutAfter, locked.StatusCode, locked.Header.Get("Retry-After"))
	}
	if res := loginReq(t, base, `{"username":"admin","password":"right-password"}`, nil); res.StatusCode != 200 {
		t.Errorf("another user was locked out too: %d", res.StatusCode)
	}

	// Logout clears the cookie.
	req, _ := http.NewRequest("POST", base+"/api/logout", nil)
	out, err := clientFrom("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if out.StatusCode != 204 || len(out.Cookies()) != 1 || out.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: %d %+v", out.StatusCode, out.Cookies())
	}
}

func TestLoginRatePerIP(t *testing.T) {
	s := startServer(t, func(c *Config) { c.RateLimit.LoginPerMinute = 4 }, Deps{Accounts: accounts{"admin": "x"}})
	base := "http://" + s.Addr().String()
	got429 := false
	for i := range 10 {
		// Different names, so the per-user lockout is not what stops them.
		res := loginReq(t, base, `{"username":"u`+string(rune('a'+i))+`","password":"p"}`, nil)
		if res.StatusCode == 429 {
			got429 = true
			break
		}
	}
	if !got429 {
		t.Error("10 logins at once from one address were never limited (4 per minute)")
	}
}

func TestStaticPortal(t *testing.T) {
	page := "<!doctype html><title>admin</title>" + strings.Repeat("<p>dualgate</p>", 200)
	fsys := fstest.MapFS{
		"admin/index.html": {Data: []byte(page)},
		"admin/admin.js":   {Data: []byte("console.log('x')")},
	}
	s := startServer(t, nil, Deps{Static: fsys})
	base := "http://" + s.Addr().String()
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}

	res, err := c.Get(base + "/admin/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != page || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/admin/: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("ETag") == "" {
		t.Errorf("headers: %v", res.Header)
	}
	// Revalidation answers 304 without a body.
	req, _ := http.NewRequest("GET", base+"/admin/", nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	if again, err := c.Do(req); err != nil || again.StatusCode != 304 {
		t.Errorf("If-None-Match: %v %v", again, err)
	}
	// Compression for clients that ask.
	req, _ = http.NewRequest("GET", base+"/admin/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	gz, err := c.Do(req)
	if err != nil || gz.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("gzip: %v %v", gz, err)
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	gz.Body.Close()
	if string(plain) != page {
		t.Error("gzip body differs from the file")
	}
	// Each representation has its own strong validator (RFC 9110 8.8.3): the plain ETag does not
	// validate the gzip copy, the gzip one does.
	gzTag := gz.Header.Get("ETag")
	if gzTag == "" || gzTag == res.Header.Get("ETag") {
		t.Errorf("gzip ETag %q, plain %q: want two different validators", gzTag, res.Header.Get("ETag"))
	}
	for _, tc := range []struct {
		tag  string
		want int
	}{{res.Header.Get("ETag"), 200}, {gzTag, 304}} {
		req, _ = http.NewRequest("GET", base+"/admin/", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("If-None-Match", tc.tag)
		again, err := c.Do(req)
		if err != nil || again.StatusCode != tc.want {
			t.Errorf("gzip request with If-None-Match %s: %v %v, want %d", tc.tag, again, err, tc.want)
			continue
		}
		again.Body.Close()
	}
	if res, _ := c.Get(base + "/admin/admin.js"); res == nil || !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
		t.Errorf("admin.js content type: %v", res)
	}
	if res, _ := c.Get(base + "/admin/missing.js"); res == nil || res.StatusCode != 404 {
		t.Errorf("missing file: %v", res)
	}
}
