package web

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/dualgate/dualgate/web/auth"
)

// testJWTConfig is an HS256 config with a fresh secret file.
func testJWTConfig(t *testing.T) auth.Config {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(p, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := auth.DefaultConfig()
	c.SecretFile = p
	return c
}

// token mints a token the server accepts, for the given roles.
func token(t *testing.T, s *Server, sub string, roles ...string) string {
	t.Helper()
	signer, err := auth.NewSigner(s.cfg.JWT)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := signer.Mint(sub, roles)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
