package users

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

var updateDemo = flag.Bool("update-demo", false, "regenerate ../configs/users.yaml (demo users, password dualgate-demo)")

const demoFile = "../configs/users.yaml"

// Fixture hashes, bcrypt cost 10, made once with bcrypt.GenerateFromPassword: hashing in every
// test would take seconds under -race.
const (
	horsePassword = "correct horse battery"
	horseHash     = "$2a$10$4xaw40H.tiIxVlEAa8yAhuAs9Vt.l8do7JqS9ck6Y2ePtoDSYbp2S"
	otherPassword = "another-secret-42"
	otherHash     = "$2a$10$.rgJ2NcZyUBvESu.UNJ7u.CRR0V/8Rb7gDOSojiSWOo7XHG0xZKF6"
	cost9Hash     = "$2a$09$rDNG9AHVQORmhWaL2rQb8.17OQzupajQ0JcmoGDfccc.WW.UZdxSK"
	cost15Hash    = "$2a$15$.WMQEIDrChdWDTS/sZPyTeluGXKRmVVtjDjoXt9bCKu7X6OSZFahC"
)

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// validFile has users with horsePassword (1001, with both HA1s), otherPassword (admin, web
// only) and a SIP-only trunk user.
var validFile = `# test users
realm: example.com
users:
  - name: "1001" # the agent
    display_name: Agent 1001
    roles: [agent]
    web_password: "` + horseHash + `"
    sip_ha1_md5: ` + md5Hex("1001:example.com:"+horsePassword) + `
    sip_ha1_sha256: ` + sha256Hex("1001:example.com:"+horsePassword) + `
  - name: admin
    roles: [admin, agent]
    web_password: "` + otherHash + `"
  - name: trunk-1
    roles: [agent]
    sip_ha1_md5: ` + strings.ToUpper(md5Hex("trunk-1:example.com:"+otherPassword)) + `
`

func mustParse(t *testing.T, data string) *Store {
	t.Helper()
	s, err := Parse([]byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestParseValid(t *testing.T) {
	s := mustParse(t, validFile)
	if s.Realm() != "example.com" {
		t.Errorf("realm %q", s.Realm())
	}
	u, ok := s.Lookup("admin")
	if !ok || !u.HasRole(RoleAdmin) || !u.HasRole(RoleAgent) || u.HasRole("root") {
		t.Errorf("admin: %+v %v", u, ok)
	}
	u, ok = s.Lookup("1001")
	if !ok || u.DisplayName != "Agent 1001" || !slices.Equal(u.Roles, []string{"agent"}) || u.HasRole(RoleAdmin) {
		t.Errorf("1001: %+v %v", u, ok)
	}
	if _, ok := s.Lookup("ADMIN"); ok {
		t.Error("Lookup is not exact")
	}
	// The caller's copy of the roles is its own.
	u.Roles[0] = RoleAdmin
	if u2, _ := s.Lookup("1001"); u2.HasRole(RoleAdmin) {
		t.Error("changing a looked-up user changed the store")
	}
}

func TestParseProblems(t *testing.T) {
	user := func(fields string) string {
		return "realm: dualgate\nusers:\n  - " + strings.ReplaceAll(strings.TrimSpace(fields), "\n", "\n    ") + "\n"
	}
	md5OK := md5Hex("x")
	for _, tc := range []struct {
		name string
		data string
		want []string // every one must be in the error
		n    int      // problems reported; 0 means 1
	}{
		{"empty file", "", []string{"empty users file"}, 0},
		{"not yaml", "realm: [", []string{"decode users file"}, 0},
		{"no realm", "users: []\n", []string{"realm: missing"}, 0},
		{"realm with a quote", "realm: 'a\"b'\n", []string{`realm: "a\"b"`}, 0},
		{"unknown top key", "realm: r\nuser: []\n", []string{`unknown key "user" (line 2)`}, 0},
		{"unknown user key", user("name: a\nroles: [agent]\nsip_ha1_md5: " + md5OK + "\npassword: x"), []string{`users[0] "a": unknown key "password" (line 6)`}, 0},
		{"two documents", "realm: r\n---\nrealm: s\n", []string{"more than one YAML document"}, 0},
		{"missing name", user("roles: [agent]\nsip_ha1_md5: " + md5OK), []string{"users[0]: name: missing"}, 0},
		{"bad name", user("name: a b\nroles: [agent]\nsip_ha1_md5: " + md5OK), []string{`users[0] "a b": name: "a b": want 1 to 64`}, 0},
		{"name too long", user("name: " + strings.Repeat("a", 65) + "\nroles: [agent]\nsip_ha1_md5: " + md5OK), []string{"name: \"aaaa", "want 1 to 64"}, 0},
		{"name with colon", user("name: 'a:b'\nroles: [agent]\nsip_ha1_md5: " + md5OK), []string{`name: "a:b"`}, 0},
		{"display name with line break", user("name: a\ndisplay_name: \"x\\r\\nVia: evil\"\nroles: [agent]\nsip_ha1_md5: " + md5OK), []string{"display_name: contains control characters"}, 0},
		{"no roles", user("name: a\nsip_ha1_md5: " + md5OK), []string{`users[0] "a": roles: want at least one`}, 0},
		{"empty roles", user("name: a\nroles: []\nsip_ha1_md5: " + md5OK), []string{"roles: want at least one"}, 0},
		{"unknown role", user("name: a\nroles: [agent, boss]\nsip_ha1_md5: " + md5OK), []string{`roles: unknown role "boss"`}, 0},
		{"role twice", user("name: a\nroles: [agent, agent]\nsip_ha1_md5: " + md5OK), []string{`roles: "agent" listed twice`}, 0},
		{"no credentials", user("name: a\nroles: [agent]"), []string{"no credentials"}, 0},
		{"bad bcrypt", user("name: a\nroles: [agent]\nweb_password: hunter2"), []string{"web_password: not a bcrypt hash"}, 0},
		{"bcrypt one char short", user("name: a\nroles: [agent]\nweb_password: '" + horseHash[:59] + "'"), []string{"web_password: not a bcrypt hash"}, 0},
		{"bcrypt bad alphabet", user("name: a\nroles: [agent]\nweb_password: '" + horseHash[:59] + "!'"), []string{"web_password: not a bcrypt hash"}, 0},
		{"bcrypt wrong version", user("name: a\nroles: [agent]\nweb_password: '$2x$" + horseHash[4:] + "'"), []string{"web_password: not a bcrypt hash"}, 0},
		{"bcrypt cost 9", user("name: a\nroles: [agent]\nweb_password: '" + cost9Hash + "'"), []string{"web_password: bcrypt cost 9: want 10 to 14"}, 0},
		{"bcrypt cost 15", user("name: a\nroles: [agent]\nweb_password: '" + cost15Hash + "'"), []string{"web_password: bcrypt cost 15: want 10 to 14"}, 0},
		{"md5 ha1 too short", user("name: a\nroles: [agent]\nsip_ha1_md5: abc123"), []string{"sip_ha1_md5: 6 characters: want 32 hex digits"}, 0},
		{"md5 ha1 not hex", user("name: a\nroles: [agent]\nsip_ha1_md5: " + strings.Repeat("z", 32)), []string{"sip_ha1_md5: not hex"}, 0},
		{"sha256 ha1 given md5 length", user("name: a\nroles: [agent]\nsip_ha1_sha256: " + md5OK), []string{"sip_ha1_sha256: 32 characters: want 64 hex digits"}, 0},
		{"sha256 ha1 not hex", user("name: a\nroles: [agent]\nsip_ha1_sha256: " + strings.Repeat("g", 64)), []string{"sip_ha1_sha256: not hex"}, 0},
		{"duplicate names", "realm: r\nusers:\n" +
			"  - {name: a, roles: [agent], sip_ha1_md5: " + md5OK + "}\n" +
			"  - {name: b, roles: [agent], sip_ha1_md5: " + md5OK + "}\n" +
			"  - {name: a, roles: [admin], sip_ha1_md5: " + md5OK + "}\n",
			[]string{`users[2] "a": duplicate name, also users[0]`}, 0},
		{"names differing in case", "realm: r\nusers:\n" +
			"  - {name: admin, roles: [admin], sip_ha1_md5: " + md5OK + "}\n" +
			"  - {name: Admin, roles: [admin], sip_ha1_md5: " + md5OK + "}\n",
			[]string{`users[1] "Admin": name differs only in case from users[0] "admin"`}, 0},
		{"every problem at once", "realm: ''\nextra: 1\nusers:\n" +
			"  - {name: 'bad name', roles: [agent], sip_ha1_md5: " + md5OK + "}\n" +
			"  - {name: ok, roles: [], web_password: nope, color: red}\n" +
			"  - {name: ok, roles: [root], sip_ha1_md5: '12', sip_ha1_sha256: " + md5OK + "}\n",
			[]string{
				"realm: missing",
				`unknown key "extra" (line 2)`,
				`users[1] "ok": unknown key "color" (line 5)`,
				`users[0] "bad name": name:`,
				`users[1] "ok": roles: want at least one`,
				`users[1] "ok": web_password: not a bcrypt hash`,
				`users[2] "ok": roles: unknown role "root"`,
				`users[2] "ok": sip_ha1_md5: 2 characters`,
				`users[2] "ok": sip_ha1_sha256: 32 characters`,
				`users[2] "ok": duplicate name, also users[1]`,
			}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.data))
			if err == nil {
				t.Fatalf("no error; store %+v", s)
			}
			if s != nil {
				t.Error("a store came back with the error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			want := max(tc.n, 1)
			if n := strings.Count(err.Error(), "\n") + 1; n != want {
				t.Errorf("%d problems reported, want %d:\n%v", n, want, err)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(p, []byte("realm: r\nusers: [{name: a, roles: [x], sip_ha1_md5: '1'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `unknown role "x"`) || !strings.Contains(err.Error(), "sip_ha1_md5") {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file loaded")
	}
	s, err := Load(writeTemp(t, validFile, 0o600))
	if err != nil || s.Realm() != "example.com" {
		t.Errorf("Load valid: %v", err)
	}
}

// TestCheckWebPassword uses real bcrypt (about a second per case under -race, hence few cases
// and in parallel); TestCheckWebPasswordAlwaysComparesOnce covers more through the seam.
func TestCheckWebPassword(t *testing.T) {
	s := mustParse(t, validFile)
	for _, tc := range []struct {
		name, user, password string
		ok                   bool
	}{
		{"right", "1001", horsePassword, true},
		{"right, other user", "admin", otherPassword, true},
		{"wrong", "1001", otherPassword, false},
		{"unknown user", "nobody", horsePassword, false},
		{"name in another case", "ADMIN", otherPassword, false},
		{"user without web password", "trunk-1", otherPassword, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, ok := s.CheckWebPassword(tc.user, tc.password)
			if ok != tc.ok {
				t.Fatalf("CheckWebPassword(%q) = %v, want %v", tc.user, ok, tc.ok)
			}
			if ok && u.Name != tc.user {
				t.Errorf("returned user %q", u.Name)
			}
			if !ok && (u.Name != "" || u.Roles != nil) {
				t.Errorf("refused login returned a user: %+v", u)
			}
		})
	}
}

// TestCheckWebPasswordAlwaysComparesOnce counts bcrypt comparisons through the Store's seam:
// an unknown name or a user without web password costs the same one comparison, against the
// dummy hash, as a real user.
func TestCheckWebPasswordAlwaysComparesOnce(t *testing.T) {
	s := mustParse(t, validFile)
	type call struct{ hash, password string }
	var calls []call
	s.compare = func(hash, password []byte) error { // bcrypt's answers for the fixtures
		calls = append(calls, call{string(hash), string(password)})
		if string(hash) == horseHash && string(password) == horsePassword ||
			string(hash) == otherHash && string(password) == otherPassword {
			return nil
		}
		return bcrypt.ErrMismatchedHashAndPassword
	}
	for _, tc := range []struct {
		user, password, hash string
		ok                   bool
	}{
		{"1001", horsePassword, horseHash, true},
		{"admin", otherPassword, otherHash, true},
		{"1001", "wrong", horseHash, false},
		{"1001", "", horseHash, false},
		{"admin", horsePassword, otherHash, false}, // another user's password
		{"nobody", "wrong", string(s.dummy), false},
		{"nobody", horsePassword, string(s.dummy), false},
		{"", "", string(s.dummy), false},
		{"ADMIN", otherPassword, string(s.dummy), false},
		{"trunk-1", "wrong", string(s.dummy), false},
	} {
		calls = nil
		_, ok := s.CheckWebPassword(tc.user, tc.password)
		if ok != tc.ok {
			t.Errorf("%s: ok %v", tc.user, ok)
		}
		if len(calls) != 1 || calls[0].hash != tc.hash || calls[0].password != tc.password {
			t.Errorf("%s: comparisons %+v, want one against %s", tc.user, calls, tc.hash)
		}
	}
	// The dummy has the cost the users have (both cost 10 here).
	if c, err := bcrypt.Cost(s.dummy); err != nil || c != 10 {
		t.Errorf("dummy cost %d, %v; want 10", c, err)
	}
}

func TestDummyHashes(t *testing.T) {
	for c := MinCost; c <= MaxCost; c++ {
		h, ok := dummyHashes[c]
		if !ok {
			t.Errorf("no dummy hash for cost %d", c)
			continue
		}
		if err := checkBcrypt(h); err != nil {
			t.Errorf("cost %d: %v", c, err)
		}
		if got, _ := bcrypt.Cost([]byte(h)); got != c {
			t.Errorf("dummy for cost %d has cost %d", c, got)
		}
	}
	for _, tc := range []struct {
		costs map[int]int
		want  int
	}{
		{nil, DefaultCost},
		{map[int]int{10: 3}, 10},
		{map[int]int{10: 3, 12: 1}, 10},
		{map[int]int{10: 1, 13: 2, 12: 2}, 13},
	} {
		if got := dummyCost(tc.costs); got != tc.want {
			t.Errorf("dummyCost(%v) = %d, want %d", tc.costs, got, tc.want)
		}
	}
}

func TestHA1(t *testing.T) {
	t.Parallel()
	// RFC 2617 §3.5's example, so the formula is checked against an outside value too.
	const rfc2617HA1 = "939e7578ed9e3c518a452acee763bce9"
	if got := ha1MD5("Mufasa", "testrealm@host.com", "Circle Of Life"); got != rfc2617HA1 {
		t.Errorf("RFC 2617 HA1 %s, want %s", got, rfc2617HA1)
	}

	e, err := newEntry("1002", "Agent 1002", "sip.example.com", "s3cret:with:colons", []string{RoleAgent}, MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(e.WebPassword), []byte("s3cret:with:colons")) != nil {
		t.Error("web_password does not verify")
	}
	s := mustParse(t, "realm: sip.example.com\nusers:\n"+indentEntry(t, e))
	input := "1002:sip.example.com:s3cret:with:colons"
	for _, tc := range []struct {
		user, algorithm, want string
		ok                    bool
	}{
		{"1002", "MD5", md5Hex(input), true},
		{"1002", "md5", md5Hex(input), true},
		{"1002", "SHA-256", sha256Hex(input), true},
		{"1002", "sha-256", sha256Hex(input), true},
		{"1002", "SHA-512-256", "", false},
		{"1002", "", "", false},
		{"nobody", "MD5", "", false},
	} {
		got, ok := s.HA1(tc.user, tc.algorithm)
		if got != tc.want || ok != tc.ok {
			t.Errorf("HA1(%q, %q) = %q, %v; want %q, %v", tc.user, tc.algorithm, got, ok, tc.want, tc.ok)
		}
	}

	// Upper-case hex in the file comes back lower-case, as digest computations need it.
	s = mustParse(t, validFile)
	if got, _ := s.HA1("trunk-1", "MD5"); got != md5Hex("trunk-1:example.com:"+otherPassword) {
		t.Errorf("trunk-1 HA1 %q", got)
	}
	if _, ok := s.HA1("trunk-1", "SHA-256"); ok {
		t.Error("HA1 for a hash the user does not have")
	}
}

func TestNewEntry(t *testing.T) {
	t.Parallel()
	e, err := NewEntry("agent.7", "Agent Seven", "dualgate", "a long enough password", []string{RoleAgent, RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost([]byte(e.WebPassword)); err != nil || c != DefaultCost {
		t.Errorf("bcrypt cost %d, %v; want %d", c, err, DefaultCost)
	}
	// That the hash verifies is checked at cost 10 in TestHA1: the same code, a quarter the time.
	if e.SIPHA1MD5 != md5Hex("agent.7:dualgate:a long enough password") || e.SIPHA1SHA256 != sha256Hex("agent.7:dualgate:a long enough password") {
		t.Errorf("HA1s %s %s", e.SIPHA1MD5, e.SIPHA1SHA256)
	}
	if errs := e.validate(); len(errs) > 0 {
		t.Errorf("entry does not validate: %v", errs)
	}
}

func TestNewEntryRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, user, display, realm, password string
		roles                                []string
		want                                 []string
	}{
		{"bad name", "a b", "", "r", "pw", []string{"agent"}, []string{"name:"}},
		{"no roles", "a", "", "r", "pw", nil, []string{"roles: want at least one"}},
		{"unknown role", "a", "", "r", "pw", []string{"boss"}, []string{`unknown role "boss"`}},
		{"no realm", "a", "", "", "pw", []string{"agent"}, []string{"realm: missing"}},
		{"empty password", "a", "", "r", "", []string{"agent"}, []string{"password: empty"}},
		{"password over 72 bytes", "a", "", "r", strings.Repeat("x", 73), []string{"agent"}, []string{"72 bytes"}},
		{"all at once", "", "bad\x00", "", "", nil, []string{"name: missing", "display_name:", "roles:", "realm:", "password: empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewEntry(tc.user, tc.display, tc.realm, tc.password, tc.roles)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestUsesDemoPasswords(t *testing.T) {
	s, err := Load(demoFile)
	if err != nil {
		t.Fatal(err)
	}
	if !s.UsesDemoPasswords() {
		t.Errorf("%s: UsesDemoPasswords false", demoFile)
	}
	if mustParse(t, validFile).UsesDemoPasswords() {
		t.Error("validFile: UsesDemoPasswords true")
	}
	// A SIP-only user with the demo password, known only by its SHA-256 HA1.
	sha := "realm: r\nusers:\n  - {name: t, roles: [agent], sip_ha1_sha256: " + sha256Hex("t:r:"+DemoPassword) + "}\n"
	if !mustParse(t, sha).UsesDemoPasswords() {
		t.Error("SHA-256-only demo user not noticed")
	}
	// The demo password hashed for another realm is a different HA1: not the demo's.
	other := "realm: r\nusers:\n  - {name: t, roles: [agent], sip_ha1_md5: " + md5Hex("t:dualgate:"+DemoPassword) + "}\n"
	if mustParse(t, other).UsesDemoPasswords() {
		t.Error("HA1 of another realm taken for the demo password")
	}
}

// TestDemoFile checks configs/users.yaml; go test ./users -run TestDemoFile -update-demo
// rewrites it.
func TestDemoFile(t *testing.T) {
	if *updateDemo {
		writeDemoFile(t)
	}
	data, err := os.ReadFile(demoFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("# DEMO CREDENTIALS")) || !bytes.Contains(data, []byte("LOCAL DEVELOPMENT ONLY")) {
		t.Error("the demo file does not start with its loud warning")
	}
	s, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if s.Realm() != "dualgate" || len(s.users) != 3 {
		t.Errorf("realm %q, %d users", s.Realm(), len(s.users))
	}
	for _, want := range []User{
		{Name: "1001", DisplayName: "Agent 1001", Roles: []string{RoleAgent}},
		{Name: "1002", DisplayName: "Agent 1002", Roles: []string{RoleAgent}},
		{Name: "admin", DisplayName: "Administrator", Roles: []string{RoleAdmin}},
	} {
		t.Run(want.Name, func(t *testing.T) {
			t.Parallel()
			u, ok := s.CheckWebPassword(want.Name, DemoPassword)
			if !ok {
				t.Fatal("demo password refused")
			}
			if u.DisplayName != want.DisplayName || !slices.Equal(u.Roles, want.Roles) {
				t.Errorf("got %+v, want %+v", u, want)
			}
			if md, _ := s.HA1(want.Name, "MD5"); md != md5Hex(want.Name+":dualgate:"+DemoPassword) {
				t.Errorf("MD5 HA1 %s", md)
			}
			if sh, _ := s.HA1(want.Name, "SHA-256"); sh != sha256Hex(want.Name+":dualgate:"+DemoPassword) {
				t.Errorf("SHA-256 HA1 %s", sh)
			}
		})
	}
}

const demoHeader = `# DEMO CREDENTIALS - FOR LOCAL DEVELOPMENT ONLY - NEVER DEPLOY THIS FILE.
# Every user below has the published password "dualgate-demo"; ` + "`dualgate check`" + ` warns about it.
# Make a real users file with:  dualgate passwd -file FILE -user NAME -name "..." -roles agent
#
# The users file both planes share: web logins (bcrypt) and SIP digest HA1 hashes. Fields:
#   realm           realm of the SIP HA1 hashes; must match the SIP plane's realm
#   name            SIP user and web login name: [A-Za-z0-9._-]{1,64}
#   display_name    shown in the portals
#   roles           agent and/or admin, at least one
#   web_password    bcrypt hash, cost 10 to 14 (this demo file uses 10 to keep tests fast)
#   sip_ha1_md5     MD5(name:realm:password), hex
#   sip_ha1_sha256  SHA-256(name:realm:password), hex
# An HA1 is as good as the password for SIP: keep real users files private (mode 0600).
`

func writeDemoFile(t *testing.T) {
	t.Helper()
	f := fileYAML{Realm: "dualgate"}
	for _, u := range []struct{ name, display, role string }{
		{"1001", "Agent 1001", RoleAgent},
		{"1002", "Agent 1002", RoleAgent},
		{"admin", "Administrator", RoleAdmin},
	} {
		e, err := newEntry(u.name, u.display, f.Realm, DemoPassword, []string{u.role}, MinCost)
		if err != nil {
			t.Fatal(err)
		}
		f.Users = append(f.Users, e)
	}
	body, err := encode(&f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(demoFile, append([]byte(demoHeader), body...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// indentEntry renders e as one item of the users list.
func indentEntry(t *testing.T, e EntryYAML) string {
	t.Helper()
	b, err := encode([]EntryYAML{e})
	if err != nil {
		t.Fatal(err)
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", "\n  ") + "\n"
}

func writeTemp(t *testing.T, data string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestUpsert(t *testing.T) {
	// What newEntry makes, with a fixture bcrypt hash instead of a slow fresh one.
	entry := func(name, display, realm, password string, roles ...string) EntryYAML {
		return EntryYAML{
			Name: name, DisplayName: display, Roles: roles, realm: realm,
			WebPassword:  otherHash,
			SIPHA1MD5:    md5Hex(name + ":" + realm + ":" + password),
			SIPHA1SHA256: sha256Hex(name + ":" + realm + ":" + password),
		}
	}
	before := mustParse(t, validFile)

	t.Run("replace keeps the others, the realm and the comments", func(t *testing.T) {
		p := writeTemp(t, validFile, 0o644)
		e := entry("1001", "Agent Smith", "example.com", "new password 1001", RoleAgent, RoleAdmin)
		if err := Upsert(p, e); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		s := mustParse(t, string(data))
		if s.Realm() != "example.com" || len(s.users) != 3 {
			t.Errorf("realm %q, %d users", s.Realm(), len(s.users))
		}
		u, _ := s.Lookup("1001")
		if u.DisplayName != "Agent Smith" || !slices.Equal(u.Roles, []string{"agent", "admin"}) || string(u.webHash) != otherHash {
			t.Errorf("1001 not replaced: %+v", u)
		}
		if h, _ := s.HA1("1001", "SHA-256"); h != sha256Hex("1001:example.com:new password 1001") {
			t.Errorf("1001 SHA-256 HA1 %s", h)
		}
		for _, name := range []string{"admin", "trunk-1"} {
			if got, want := s.users[name], before.users[name]; got.DisplayName != want.DisplayName ||
				!slices.Equal(got.Roles, want.Roles) || string(got.webHash) != string(want.webHash) || got.ha1MD5 != want.ha1MD5 {
				t.Errorf("%s changed: %+v, was %+v", name, got, want)
			}
		}
		if names := userOrder(t, data); !slices.Equal(names, []string{"1001", "admin", "trunk-1"}) {
			t.Errorf("order %v", names)
		}
		for _, c := range []string{"# test users", "# the agent"} {
			if !bytes.Contains(data, []byte(c)) {
				t.Errorf("comment %q lost:\n%s", c, data)
			}
		}
		checkMode(t, p)
	})

	t.Run("add appends", func(t *testing.T) {
		p := writeTemp(t, validFile, 0o600)
		if err := Upsert(p, entry("1003", "", "example.com", "pw", RoleAgent)); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		if names := userOrder(t, data); !slices.Equal(names, []string{"1001", "admin", "trunk-1", "1003"}) {
			t.Errorf("order %v", names)
		}
		checkMode(t, p)
	})

	t.Run("empty list", func(t *testing.T) {
		for _, doc := range []string{"realm: r\nusers: []\n", "realm: r\nusers:\n", "realm: r\n"} {
			p := writeTemp(t, doc, 0o600)
			if err := Upsert(p, entry("a", "", "r", "pw", RoleAgent)); err != nil {
				t.Fatalf("%q: %v", doc, err)
			}
			data, _ := os.ReadFile(p)
			if names := userOrder(t, data); !slices.Equal(names, []string{"a"}) {
				t.Errorf("%q: users %v\n%s", doc, names, data)
			}
		}
	})

	t.Run("new file takes the entry's realm", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "new.yaml")
		if err := Upsert(p, entry("a", "", "new-realm", "pw", RoleAgent)); err != nil {
			t.Fatal(err)
		}
		s, err := Load(p)
		if err != nil || s.Realm() != "new-realm" {
			t.Fatalf("%v %v", s, err)
		}
		checkMode(t, p)
		// A hand-made entry does not say its realm, so it cannot start a file.
		hand := entry("b", "", "r", "pw", RoleAgent)
		hand.realm = ""
		if err := Upsert(filepath.Join(t.TempDir(), "x.yaml"), hand); err == nil {
			t.Error("hand-made entry created a file")
		}
		// ... but can join an existing one.
		if err := Upsert(p, hand); err != nil {
			t.Error(err)
		}
	})

	refused := []struct {
		name  string
		file  string
		entry EntryYAML
		want  string
	}{
		{"other realm", validFile, entry("1001", "", "elsewhere", "pw", RoleAgent), `realm "elsewhere"`},
		{"invalid file", strings.Replace(validFile, "[agent]", "[boss]", 1), entry("admin", "", "example.com", "pw", RoleAdmin), `has problems, not changed`},
		{"invalid entry", validFile, EntryYAML{Name: "x y", Roles: []string{RoleAgent}, SIPHA1MD5: "00"}, `entry "x y"`},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			p := writeTemp(t, tc.file, 0o644)
			err := Upsert(p, tc.entry)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Upsert: %v, want %q", err, tc.want)
			}
			if data, _ := os.ReadFile(p); string(data) != tc.file {
				t.Error("a refused Upsert changed the file")
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*tmp*")); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}

	t.Run("through a symlink", func(t *testing.T) {
		dir := t.TempDir()
		real := filepath.Join(dir, "real.yaml")
		if err := os.WriteFile(real, []byte(validFile), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "link.yaml")
		if err := os.Symlink(real, link); err != nil {
			t.Skip("no symlinks here:", err)
		}
		if err := Upsert(link, entry("z", "", "example.com", "pw", RoleAgent)); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Error("the link was replaced by a file")
		}
		if s, err := Load(real); err != nil || len(s.users) != 4 {
			t.Errorf("target not updated: %v", err)
		}
	})
}

func userOrder(t *testing.T, data []byte) []string {
	t.Helper()
	f, errs := decode(data)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var names []string
	for _, e := range f.Users {
		names = append(names, e.Name)
	}
	return names
}

func checkMode(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestConcurrentUse runs lookups and logins from many goroutines (for -race).
func TestConcurrentUse(t *testing.T) {
	s := mustParse(t, validFile)
	s.compare = func(hash, password []byte) error { // cheap stand-in for bcrypt
		if string(hash) == horseHash && string(password) == horsePassword {
			return nil
		}
		return bcrypt.ErrMismatchedHashAndPassword
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, ok := s.CheckWebPassword("1001", horsePassword); !ok {
					t.Error("login failed")
					return
				}
				u, _ := s.Lookup("admin")
				u.Roles[0] = "changed"
				_, _ = s.HA1("1001", "MD5")
				_ = s.UsesDemoPasswords()
			}
		})
	}
	wg.Wait()
	if u, _ := s.Lookup("admin"); u.Roles[0] != RoleAdmin {
		t.Error("store changed through a returned user")
	}
}
