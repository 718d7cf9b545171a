package auth

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestCookieTransport(t *testing.T) {
	v := newTestVerifier(t, nil)
	valid := sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims())
	forged := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), nil, claims())

	cases := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"valid cookie", cookieReq("dualgate_session", valid), 200},
		{"forged cookie", cookieReq("dualgate_session", forged), 401},
		{"valid token under another cookie name", cookieReq("session", valid), 401},
		{"empty cookie", cookieReq("dualgate_session", ""), 401},
		{"header wins over a bad cookie", func() *http.Request {
			r := cookieReq("dualgate_session", "garbage")
			r.Header.Set("Authorization", "Bearer "+valid)
			return r
		}(), 200},
		{"bad header is not rescued by a good cookie", func() *http.Request {
			r := cookieReq("dualgate_session", valid)
			r.Header.Set("Authorization", "Bearer "+forged)
			return r
		}(), 401},
		{"two session cookies (cookie tossing)", func() *http.Request {
			r := cookieReq("dualgate_session", valid)
			r.AddCookie(&http.Cookie{Name: "dualgate_session", Value: forged})
			return r
		}(), 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := through(t, v, c.req)
			if res.code != c.want {
				t.Fatalf("status = %d (%q), want %d", res.code, res.errBody, c.want)
			}
			if (res.calls == 1) != (c.want == 200) {
				t.Fatalf("handler calls = %d", res.calls)
			}
		})
	}

	t.Run("configured cookie name", func(t *testing.T) {
		v := newTestVerifier(t, func(c *Config) { c.CookieName = "__Host-dg" })
		if res := through(t, v, cookieReq("__Host-dg", valid)); res.code != 200 {
			t.Fatalf("status = %d (%q)", res.code, res.errBody)
		}
		if res := through(t, v, cookieReq("dualgate_session", valid)); res.code != 401 {
			t.Fatalf("default name still accepted: %d", res.code)
		}
	})
}

func TestRequireRole(t *testing.T) {
	v := newTestVerifier(t, nil)
	tok := func(roles any) string {
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims(set("roles", roles)))
	}
	cases := []struct {
		name  string
		route string
		roles any
		want  int
	}{
		{"agent on admin route", RoleAdmin, []string{"agent"}, 403},
		{"admin on admin route", RoleAdmin, []string{"admin"}, 200},
		{"agent on agent route", RoleAgent, []string{"agent"}, 200},
		{"admin is not implicitly agent", RoleAgent, []string{"admin"}, 403},
		{"both roles", RoleAdmin, []string{"agent", "admin"}, 200},
		{"unknown role near admin", RoleAdmin, []string{"Admin", "superadmin", "admin "}, 403},
		{"no roles", RoleAdmin, []string{}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := through(t, v, bearer(tok(c.roles)), RequireRole(c.route))
			if res.code != c.want {
				t.Fatalf("status = %d (%q), want %d", res.code, res.errBody, c.want)
			}
			if (res.calls == 1) != (c.want == 200) {
				t.Fatalf("handler calls = %d", res.calls)
			}
			if c.want == 403 && (res.ctype != "application/json" || !strings.Contains(res.errBody, "forbidden")) {
				t.Fatalf("403 body %q, content type %q", res.errBody, res.ctype)
			}
		})
	}

	t.Run("no claims in context is 401", func(t *testing.T) {
		p := &probe{}
		rec := httptest.NewRecorder()
		RequireRole(RoleAdmin)(p).ServeHTTP(rec, httptest.NewRequest("GET", "/admin", nil))
		if rec.Code != 401 || p.calls != 0 || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("status %d, calls %d", rec.Code, p.calls)
		}
	})
	t.Run("WithClaims feeds handlers under test", func(t *testing.T) {
		p := &probe{}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/admin", nil)
		r = r.WithContext(WithClaims(r.Context(), &Claims{Subject: "root", Roles: []string{RoleAdmin}}))
		RequireRole(RoleAdmin)(p).ServeHTTP(rec, r)
		if rec.Code != 200 || p.calls != 1 || p.claims.Subject != "root" {
			t.Fatalf("status %d, calls %d", rec.Code, p.calls)
		}
	})
	t.Run("misspelt role panics at wiring", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("RequireRole(\"admn\") did not panic")
			}
		}()
		RequireRole("admn")
	})
}

// TestNoSecretsInLogs drives refusals, acceptances and key loading with debug logging on and
// checks that neither a token nor the secret appears in what was logged.
func TestNoSecretsInLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := DefaultConfig()
	cfg.SecretFile = writeFile(t, t.TempDir(), "secret", []byte(testSecret))
	v, err := NewVerifier(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	valid := sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims())
	expired := sign(t, jwt.SigningMethodHS256, []byte(testSecret), nil, claims(set("exp", 1)))
	parts := strings.Split(valid, ".")
	for _, tok := range []string{valid, expired, parts[0] + "." + parts[1] + ".AAAA", "garbage"} {
		through(t, v, bearer(tok))
		through(t, v, httptest.NewRequest("GET", "/x?token="+tok, nil))
	}
	out := buf.String()
	if !strings.Contains(out, "jwt refused") {
		t.Fatalf("nothing was logged; the check below would prove nothing:\n%s", out)
	}
	for _, secret := range []string{testSecret, parts[1], parts[2], strings.Split(expired, ".")[2]} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains token or secret material %q", secret[:8])
		}
	}
}
