package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dualgate/dualgate/gateway"
)

// runTokenCmd runs `dualgate token` as a script would.
func runTokenCmd(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = tokenMain(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func writeTestFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gatewayConfig writes a config whose http.jwt section is jwtYAML (a flow mapping).
func gatewayConfig(t *testing.T, dir, jwtYAML string) string {
	t.Helper()
	return writeTestFile(t, dir, "gw.yaml", []byte(`
sip: {listen: ['udp:127.0.0.1:0']}
dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}
http: {listen: '127.0.0.1:0', jwt: `+jwtYAML+`}
`))
}

// startGateway runs the real gateway on the config file, as `dualgate -config` would.
func startGateway(t *testing.T, path string) string {
	t.Helper()
	cfg, err := gateway.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Stop(context.Background()) })
	return "http://" + gw.HTTPAddr()
}

func call(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// payload and header decode the token's claims and header without checking them (the server
// does that).
func payload(t *testing.T, token string) map[string]any { return jwsPart(t, token, 1) }

func header(t *testing.T, token string) map[string]any { return jwsPart(t, token, 0) }

func jwsPart(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenHS256AcceptedByTheGateway(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, dir, "jwt.secret", []byte("a-secret-of-more-than-thirty-two-bytes-for-hs256\n"))
	cfgPath := gatewayConfig(t, dir, `{secret_file: jwt.secret}`)
	base := startGateway(t, cfgPath)

	before := time.Now().Truncate(time.Second)
	stdout, stderr, code := runTokenCmd("-config", cfgPath, "-sub", "ops-bot", "-roles", "agent, admin", "-ttl", "15m")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	tok := strings.TrimSpace(stdout)
	if strings.Count(stdout, "\n") != 1 || strings.Count(tok, ".") != 2 {
		t.Fatalf("stdout is not exactly one token line: %q", stdout)
	}
	if !strings.Contains(stderr, "HS256") || !strings.Contains(stderr, `"ops-bot"`) {
		t.Errorf("stderr %q", stderr)
	}
	st, body := call(t, base+"/api/me", tok)
	if st != 200 {
		t.Fatalf("/api/me with the minted token: %d %s", st, body)
	}
	var me struct {
		User    string
		Roles   []string
		Expires time.Time
	}
	if err := json.Unmarshal([]byte(body), &me); err != nil {
		t.Fatal(err)
	}
	if me.User != "ops-bot" || !slices.Equal(me.Roles, []string{"agent", "admin"}) {
		t.Errorf("/api/me = %+v", me)
	}
	// exp is now + ttl, in whole seconds, as the server read it.
	if lo, hi := before.Add(15*time.Minute), time.Now().Add(15*time.Minute); me.Expires.Before(lo) || me.Expires.After(hi) {
		t.Errorf("expires %v, want between %v and %v", me.Expires, lo, hi)
	}
	p := payload(t, tok)
	if p["iss"] != "dualgate" || p["aud"] == nil || p["sub"] != "ops-bot" || p["jti"] == "" {
		t.Errorf("claims %v", p)
	}
	if exp, iat := p["exp"].(float64), p["iat"].(float64); exp-iat != 15*60 {
		t.Errorf("exp - iat = %v s, want 900", exp-iat)
	}
	if st, body := call(t, base+"/api/admin/dispatcher", tok); st != 200 {
		t.Errorf("admin route with the admin token: %d %s", st, body)
	}

	// An agent-only token passes the verifier but not the admin role check; the default TTL is
	// the config's (1h).
	stdout, stderr, code = runTokenCmd("-config", cfgPath, "-sub", "1001", "-roles", "agent")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	agent := strings.TrimSpace(stdout)
	if st, _ := call(t, base+"/api/admin/dispatcher", agent); st != 403 {
		t.Errorf("admin route with an agent token: %d, want 403", st)
	}
	if p := payload(t, agent); p["exp"].(float64)-p["iat"].(float64) != 3600 {
		t.Errorf("default ttl: exp - iat = %v", p["exp"].(float64)-p["iat"].(float64))
	}
	if st, _ := call(t, base+"/api/me", agent); st != 200 {
		t.Errorf("/api/me with the agent token: %d", st)
	}
}

func TestTokenHS256FromEnv(t *testing.T) {
	t.Setenv("DUALGATE_TEST_TOKEN_SECRET", "an-environment-secret-of-at-least-32-bytes")
	dir := t.TempDir()
	cfgPath := gatewayConfig(t, dir, `{secret_env: DUALGATE_TEST_TOKEN_SECRET}`)
	base := startGateway(t, cfgPath)
	stdout, stderr, code := runTokenCmd("-config", cfgPath, "-sub", "api-client", "-roles", "admin")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if st, body := call(t, base+"/api/admin/dispatcher", strings.TrimSpace(stdout)); st != 200 {
		t.Errorf("admin route: %d %s", st, body)
	}
}

func pemPrivate(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func pemPublic(t *testing.T, key crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestTokenWithPrivateKeys(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The gateway verifies with the public halves: two PEM files (kid = file name) for RS256
	// and ES256, and for EdDSA a JWKS document in a second gateway.
	rsaPub := writeTestFile(t, dir, "rsa-2024.pem", pemPublic(t, rsaKey.Public()))
	ecPub := writeTestFile(t, dir, "ec-main.pem", pemPublic(t, ecKey.Public()))
	pubCfg := gatewayConfig(t, dir, `{algorithms: [RS256, ES256], public_key_files: [`+rsaPub+`, `+ecPub+`]}`)
	pubBase := startGateway(t, pubCfg)

	jwksDir := t.TempDir()
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey)),
	}}})
	writeTestFile(t, jwksDir, "keys.json", jwks)
	jwksCfg := gatewayConfig(t, jwksDir, `{algorithms: [EdDSA], jwks_file: keys.json}`)
	jwksBase := startGateway(t, jwksCfg)

	for _, tc := range []struct {
		name, cfg, base, alg, kid string
		key                       []byte
	}{
		{"RS256 PKCS#8", pubCfg, pubBase, "RS256", "rsa-2024", pemPrivate(t, rsaKey)},
		{"RS256 PKCS#1", pubCfg, pubBase, "RS256", "rsa-2024",
			pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
		{"ES256 SEC 1", pubCfg, pubBase, "ES256", "ec-main", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{"EdDSA from a JWKS", jwksCfg, jwksBase, "EdDSA", "ed-1", pemPrivate(t, edKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyFile := writeTestFile(t, t.TempDir(), "private.pem", tc.key)
			stdout, stderr, code := runTokenCmd("-config", tc.cfg, "-key", keyFile, "-sub", "svc", "-roles", "admin", "-ttl", "2m")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			tok := strings.TrimSpace(stdout)
			if h := header(t, tok); h["alg"] != tc.alg || h["kid"] != tc.kid {
				t.Errorf("header %v, want alg %s kid %s", h, tc.alg, tc.kid)
			}
			if p := payload(t, tok); p["sub"] != "svc" || p["exp"].(float64)-p["iat"].(float64) != 120 {
				t.Errorf("claims %v", p)
			}
			if st, body := call(t, tc.base+"/api/admin/dispatcher", tok); st != 200 {
				t.Errorf("admin route: %d %s", st, body)
			}
		})
	}

	// A key the gateway does not know is refused before a token is printed.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := writeTestFile(t, dir, "other.pem", pemPrivate(t, other))
	edFile := writeTestFile(t, dir, "ed.pem", pemPrivate(t, edKey))
	ecFile := writeTestFile(t, dir, "ec.pem", pemPrivate(t, ecKey))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"-config", pubCfg, "-key", otherFile}, "public half is not among the configured public_key_files"},
		{"algorithm not allowed", []string{"-config", pubCfg, "-key", edFile}, "an EdDSA key, but algorithms allow only RS256, ES256"},
		{"wrong kid", []string{"-config", pubCfg, "-key", ecFile, "-kid", "rsa-2024"}, `matches the configured key with kid "ec-main", not "rsa-2024"`},
		{"public key given", []string{"-config", pubCfg, "-key", ecPub}, "holds a public key; signing needs the private key"},
		{"only public keys, no -key", []string{"-config", pubCfg}, "only public keys (public_key_files)"},
		{"only a JWKS, no -key", []string{"-config", jwksCfg}, "only public keys (jwks_file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runTokenCmd(append(tc.args, "-sub", "svc", "-roles", "admin")...)
			if code != 1 || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

func TestTokenRefuses(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, dir, "jwt.secret", []byte("a-secret-of-more-than-thirty-two-bytes-for-hs256"))
	good := gatewayConfig(t, dir, `{secret_file: jwt.secret}`)
	ephemeral := gatewayConfig(t, t.TempDir(), `{ephemeral_secret: true}`)
	keyFile := writeTestFile(t, dir, "notakey.pem", []byte("hello"))

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no -config", []string{"-sub", "a", "-roles", "agent"}, 2, "-config is required"},
		{"no -sub", []string{"-config", good, "-roles", "agent"}, 2, "-sub is required"},
		{"no -roles", []string{"-config", good, "-sub", "a"}, 2, "-roles is required"},
		{"unknown role", []string{"-config", good, "-sub", "a", "-roles", "agent,root"}, 2, `unknown role "root"`},
		{"bad ttl", []string{"-config", good, "-sub", "a", "-roles", "agent", "-ttl", "soon"}, 2, `invalid value "soon" for flag -ttl`},
		{"negative ttl", []string{"-config", good, "-sub", "a", "-roles", "agent", "-ttl", "-5m"}, 2, "must be positive"},
		{"ttl over a day", []string{"-config", good, "-sub", "a", "-roles", "agent", "-ttl", "48h"}, 1, "between 1s and 24h"},
		{"kid without key", []string{"-config", good, "-sub", "a", "-roles", "agent", "-kid", "k1"}, 2, "-kid goes with -key"},
		{"extra argument", []string{"-config", good, "-sub", "a", "-roles", "agent", "admin"}, 2, "unexpected arguments: admin"},
		{"unknown flag", []string{"-config", good, "-sub", "a", "-roles", "agent", "-secret", "x"}, 2, "flag provided but not defined: -secret"},
		{"control character in sub", []string{"-config", good, "-sub", "a\nb", "-roles", "agent"}, 1, "sub contains control characters"},
		{"missing config", []string{"-config", filepath.Join(dir, "nope.yaml"), "-sub", "a", "-roles", "agent"}, 1, "read config"},
		{"ephemeral secret", []string{"-config", ephemeral, "-sub", "a", "-roles", "agent"}, 1, "ephemeral_secret is a random secret that only the running gateway knows"},
		{"key file not PEM", []string{"-config", good, "-sub", "a", "-roles", "agent", "-key", keyFile}, 1, "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runTokenCmd(tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestTokenHelp(t *testing.T) {
	_, stderr, code := runTokenCmd("-h")
	if code != 0 || !strings.Contains(stderr, "usage: dualgate token") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}
