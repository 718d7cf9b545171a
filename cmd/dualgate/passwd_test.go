package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dualgate/dualgate/users"
)

// passwd runs the subcommand with stdin from a pipe, as a script would.
func passwd(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		_, _ = w.WriteString(stdin)
		_ = w.Close()
	}()
	var out, errOut bytes.Buffer
	code = passwdMain(args, r, &out, &errOut)
	return out.String(), errOut.String(), code
}

func hexMD5(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func copyDemo(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../configs/users.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPasswdNewFile(t *testing.T) {
	t.Parallel()
	const pw = "pässwörd-123" // 12 characters, 14 bytes
	p := filepath.Join(t.TempDir(), "users.yaml")
	stdout, stderr, code := passwd(t, pw+"\n", "-file", p, "-user", "1001", "-name", "Agent 1001", "-roles", "agent, admin")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, pw) {
		t.Error("the password was printed")
	}
	s, err := users.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Realm() != "dualgate" {
		t.Errorf("realm %q", s.Realm())
	}
	u, ok := s.CheckWebPassword("1001", pw)
	if !ok || u.DisplayName != "Agent 1001" || !slices.Equal(u.Roles, []string{"agent", "admin"}) {
		t.Errorf("login: %+v %v", u, ok)
	}
	if h, _ := s.HA1("1001", "MD5"); h != hexMD5("1001:dualgate:"+pw) {
		t.Errorf("MD5 HA1 %s", h)
	}
	if h, _ := s.HA1("1001", "SHA-256"); h != hexSHA256("1001:dualgate:"+pw) {
		t.Errorf("SHA-256 HA1 %s", h)
	}
	if s.UsesDemoPasswords() {
		t.Error("flagged as demo")
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v %v", fi.Mode().Perm(), err)
	}
}

func TestPasswdUpdateKeepsTheRest(t *testing.T) {
	t.Parallel()
	p := copyDemo(t)
	before, err := users.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	// No -name, -roles or -realm: the user keeps its own, the file its realm. A CRLF line end
	// is not part of the password.
	_, stderr, code := passwd(t, "a much better password\r\n", "-file", p, "-user", "admin")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	s, err := users.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := s.Lookup("admin")
	if u.DisplayName != "Administrator" || !slices.Equal(u.Roles, []string{"admin"}) || s.Realm() != "dualgate" {
		t.Errorf("admin now %+v in realm %q", u, s.Realm())
	}
	if h, _ := s.HA1("admin", "MD5"); h != hexMD5("admin:dualgate:a much better password") {
		t.Errorf("MD5 HA1 %s", h)
	}
	for _, name := range []string{"1001", "1002"} {
		a, _ := before.HA1(name, "SHA-256")
		b, _ := s.HA1(name, "SHA-256")
		if a != b {
			t.Errorf("%s changed", name)
		}
	}
	// The agents still have the demo password.
	if !s.UsesDemoPasswords() {
		t.Error("demo agents no longer noticed")
	}
}

func TestPasswdRefuses(t *testing.T) {
	demo := copyDemo(t)
	demoBytes, _ := os.ReadFile(demo)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	badBytes := []byte("realm: r\nusers: [{name: a, roles: [boss], sip_ha1_md5: " + hexMD5("x") + "}]\n")
	if err := os.WriteFile(bad, badBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	newFile := filepath.Join(t.TempDir(), "new.yaml")
	const good = "long enough password"

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"short password", "short-pw\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "too short"},
		{"eleven characters", "elevenchars\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "at least 12 characters"},
		{"eleven characters, multibyte", "ääääääääääää"[2:] + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "too short"},
		{"demo password", users.DemoPassword + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "demo password"},
		{"over 72 bytes", strings.Repeat("x", 73) + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "72 bytes"},
		{"empty stdin", "", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "no password on stdin"},
		{"empty line", "\n" + good + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent"}, 1, "no password on stdin"},
		{"no -file", good + "\n", []string{"-user", "a", "-roles", "agent"}, 2, "-file is required"},
		{"no -user", good + "\n", []string{"-file", newFile, "-roles", "agent"}, 2, "-user is required"},
		{"new user without -roles", good + "\n", []string{"-file", demo, "-user", "1003"}, 2, "-roles is required"},
		{"extra argument", good + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent", "oops"}, 2, "unexpected arguments"},
		{"unknown flag", good + "\n", []string{"-file", newFile, "-user", "a", "-password", "x"}, 2, "flag provided but not defined"},
		{"unknown role", good + "\n", []string{"-file", newFile, "-user", "a", "-roles", "agent,boss"}, 1, `unknown role "boss"`},
		{"bad user name", good + "\n", []string{"-file", newFile, "-user", "a:b", "-roles", "agent"}, 1, "name:"},
		{"other realm", good + "\n", []string{"-file", demo, "-user", "1001", "-realm", "other"}, 1, `uses realm "dualgate", not "other"`},
		{"broken users file", good + "\n", []string{"-file", bad, "-user", "a", "-roles", "agent"}, 1, `unknown role "boss"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := passwd(t, tc.stdin, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.want)
			}
			if pw := strings.TrimSpace(tc.stdin); pw != "" && strings.Contains(stdout+stderr, pw) {
				t.Error("the password was printed")
			}
		})
	}
	if _, err := os.Stat(newFile); err == nil {
		t.Error("a refused passwd created the file")
	}
	if data, _ := os.ReadFile(demo); !bytes.Equal(data, demoBytes) {
		t.Error("a refused passwd changed the demo copy")
	}
	if data, _ := os.ReadFile(bad); !bytes.Equal(data, badBytes) {
		t.Error("a refused passwd changed the broken file")
	}
}

func TestPasswdHelp(t *testing.T) {
	_, stderr, code := passwd(t, "", "-h")
	if code != 0 || !strings.Contains(stderr, "usage: dualgate passwd") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}
