// Package users is the users file both planes share: web logins (bcrypt) for the HTTP plane and
// the HA1 hashes for SIP digest authentication (RFC 3261 §22, RFC 8760 MD5 and SHA-256).
// Passwords are never stored in plain text.
//
// The file is YAML, decoded strictly (an unknown key is an error) and validated whole:
//
//	realm: dualgate
//	users:
//	  - name: "1001"                 # [A-Za-z0-9._-]{1,64}
//	    display_name: "Agent 1001"
//	    roles: [agent]               # agent and/or admin
//	    web_password: "$2a$12$..."   # bcrypt, cost 10..14
//	    sip_ha1_md5: "hex32"         # MD5(name:realm:password)
//	    sip_ha1_sha256: "hex64"      # SHA-256(name:realm:password)
//
// An HA1 is password-equivalent for SIP digest authentication: keep the file private (Upsert
// writes it with mode 0600).
package users

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// Roles.
const (
	RoleAgent = "agent"
	RoleAdmin = "admin"
)

// HA1 algorithms, as named in the SIP Authorization header's algorithm parameter.
const (
	AlgorithmMD5    = "MD5"
	AlgorithmSHA256 = "SHA-256"
)

// DemoPassword is the password of the demo users in configs/users.yaml. UsesDemoPasswords
// detects it so `dualgate check` can warn.
const DemoPassword = "dualgate-demo"

// Bcrypt costs accepted in a users file. Below 10 is too cheap to guess against; above 14 a
// single login costs more than a second of CPU, which turns the login endpoint into a
// denial-of-service lever.
const (
	MinCost     = 10
	MaxCost     = 14
	DefaultCost = 12 // what NewEntry uses
)

const (
	maxNameLen        = 64
	maxDisplayNameLen = 128 // runes
	maxRealmLen       = 255
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// EntryYAML is one user as written in the file.
type EntryYAML struct {
	Name         string   `yaml:"name"`
	DisplayName  string   `yaml:"display_name,omitempty"`
	Roles        []string `yaml:"roles,flow"`
	WebPassword  string   `yaml:"web_password,omitempty"`
	SIPHA1MD5    string   `yaml:"sip_ha1_md5,omitempty"`
	SIPHA1SHA256 string   `yaml:"sip_ha1_sha256,omitempty"`

	// realm is the realm the HA1s were computed for, set by NewEntry; Upsert refuses to put the
	// entry into a file with another realm. Empty for an entry built by hand.
	realm string
}

// fileYAML is the whole file.
type fileYAML struct {
	Realm string      `yaml:"realm"`
	Users []EntryYAML `yaml:"users"`
}

// User is one user as the planes see it.
type User struct {
	Name        string
	DisplayName string
	Roles       []string

	webHash   []byte // bcrypt; nil when the user has no web password
	ha1MD5    string // lower-case hex; empty when absent
	ha1SHA256 string // lower-case hex; empty when absent
}

// HasRole reports whether the user has role r.
func (u User) HasRole(r string) bool { return slices.Contains(u.Roles, r) }

// clone returns u with its own Roles, so callers cannot change the Store's copy.
func (u User) clone() User {
	u.Roles = slices.Clone(u.Roles)
	return u
}

// Store is a loaded users file. It is immutable after Load/Parse and safe for concurrent use.
type Store struct {
	realm string
	users map[string]User

	// dummy is the bcrypt hash compared against when the name is unknown or has no web
	// password, at the cost most of the file's users have, so such a login takes as long as a
	// real one.
	dummy []byte
	// compare is bcrypt.CompareHashAndPassword; a seam for tests that count comparisons.
	compare func(hash, password []byte) error
}

// dummyHashes are fixed bcrypt hashes, one per accepted cost, of a password no user has to
// know; only their cost and the work of comparing against them matter.
var dummyHashes = map[int]string{
	10: "$2a$10$/1YgoAGc3mgA/4tcLvhfxuHhlyo35xWETyC0nXT0OlVONQtXO7Bui",
	11: "$2a$11$NQNWmSQfI/iYWOtZsmc8lulX6S6mkL3ISLCJfi1IY8kXsS37jdKGO",
	12: "$2a$12$fYapuplGMWgLbcFJXt0vPu9XqL1coebDfyH3zPxCnhh7VAwd4//ra",
	13: "$2a$13$VXQYGJLrm.Tqon6VI6bjJ.s8gKU1MblmqVp/i1Ii3zLc2cqf.qt9O",
	14: "$2a$14$ma2oFdHxCCDxvbp9fEeIRO8AAZXfVOt9RtxmUYEIUcSPfVrQzxU8G",
}

// Load reads and parses a users file, reporting every problem at once.
func Load(path string) (*Store, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes users-file bytes strictly and validates them whole. The error joins every
// problem found, each naming the user by index and name.
func Parse(data []byte) (*Store, error) {
	f, errs := decode(data)
	if f == nil {
		return nil, errors.Join(errs...)
	}
	errs = append(errs, f.validate()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	s := &Store{
		realm:   f.Realm,
		users:   make(map[string]User, len(f.Users)),
		compare: bcrypt.CompareHashAndPassword,
	}
	costs := map[int]int{}
	for _, e := range f.Users {
		u := User{
			Name:        e.Name,
			DisplayName: e.DisplayName,
			Roles:       slices.Clone(e.Roles),
			ha1MD5:      strings.ToLower(e.SIPHA1MD5),
			ha1SHA256:   strings.ToLower(e.SIPHA1SHA256),
		}
		if e.WebPassword != "" {
			u.webHash = []byte(e.WebPassword)
			c, _ := bcrypt.Cost(u.webHash) // validated above
			costs[c]++
		}
		s.users[u.Name] = u
	}
	s.dummy = []byte(dummyHashes[dummyCost(costs)])
	return s, nil
}

// dummyCost is the cost most web passwords use (the higher one on a tie), DefaultCost when
// there are none.
func dummyCost(costs map[int]int) int {
	best, n := DefaultCost, 0
	for c, k := range costs {
		if k > n || (k == n && c > best) {
			best, n = c, k
		}
	}
	return best
}

// decode reads the single YAML document strictly. Unknown keys are collected as problems and
// decoding goes on, so validation can report the rest too; a syntax error stops it (nil file).
func decode(data []byte) (*fileYAML, []error) {
	var f fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var errs []error
	if err := dec.Decode(&f); err != nil {
		var te *yaml.TypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, []error{errors.New("empty users file")}
		case errors.As(err, &te):
			errs = unknownKeys(data, te.Errors)
		default:
			return nil, []error{fmt.Errorf("decode users file: %w", err)}
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		errs = append(errs, errors.New("more than one YAML document; want exactly one"))
	}
	return &f, errs
}

// unknownKeyRE matches yaml.v3's message for a key the struct lacks.
var unknownKeyRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type users\.(\w+)$`)

// unknownKeys rewrites yaml.v3's type errors, naming the user an unknown key belongs to.
func unknownKeys(data []byte, msgs []string) []error {
	// Where each user's entry starts, to tell which one a line falls in.
	var starts []int
	var names []string
	var doc struct {
		Users []yaml.Node `yaml:"users"`
	}
	if yaml.Unmarshal(data, &doc) == nil {
		for _, n := range doc.Users {
			starts = append(starts, n.Line)
			names = append(names, mappingValue(&n, "name"))
		}
	}
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		sub := unknownKeyRE.FindStringSubmatch(m)
		if sub == nil {
			errs = append(errs, errors.New(m))
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		where := ""
		if sub[3] == "EntryYAML" {
			i := 0
			for i+1 < len(starts) && starts[i+1] <= line {
				i++
			}
			where = fmt.Sprintf("users[%d]: ", i)
			if i < len(names) && names[i] != "" {
				where = fmt.Sprintf("users[%d] %q: ", i, names[i])
			}
		}
		errs = append(errs, fmt.Errorf("%sunknown key %q (line %d)", where, sub[2], line))
	}
	return errs
}

func (f *fileYAML) validate() []error {
	var errs []error
	if err := checkRealm(f.Realm); err != nil {
		errs = append(errs, fmt.Errorf("realm: %w", err))
	}
	seen := map[string]int{} // lower-cased name → index
	for i, e := range f.Users {
		where := fmt.Sprintf("users[%d]", i)
		if e.Name != "" {
			where += fmt.Sprintf(" %q", e.Name)
		}
		for _, err := range e.validate() {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if e.Name == "" {
			continue
		}
		key := strings.ToLower(e.Name)
		if j, ok := seen[key]; ok {
			if f.Users[j].Name == e.Name {
				errs = append(errs, fmt.Errorf("%s: duplicate name, also users[%d]", where, j))
			} else {
				errs = append(errs, fmt.Errorf("%s: name differs only in case from users[%d] %q", where, j, f.Users[j].Name))
			}
			continue
		}
		seen[key] = i
	}
	return errs
}

// validate checks one entry on its own (not against the others).
func (e *EntryYAML) validate() []error {
	return append(e.checkIdentity(), e.checkCredentials()...)
}

// checkIdentity checks name, display name and roles.
func (e *EntryYAML) checkIdentity() []error {
	var errs []error
	if err := checkName(e.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if err := checkDisplayName(e.DisplayName); err != nil {
		errs = append(errs, fmt.Errorf("display_name: %w", err))
	}
	return append(errs, checkRoles(e.Roles)...)
}

// checkCredentials checks the hashes' formats; at least one must be present.
func (e *EntryYAML) checkCredentials() []error {
	var errs []error
	if e.WebPassword != "" {
		if err := checkBcrypt(e.WebPassword); err != nil {
			errs = append(errs, fmt.Errorf("web_password: %w", err))
		}
	}
	if e.SIPHA1MD5 != "" {
		if err := checkHex(e.SIPHA1MD5, md5.Size); err != nil {
			errs = append(errs, fmt.Errorf("sip_ha1_md5: %w", err))
		}
	}
	if e.SIPHA1SHA256 != "" {
		if err := checkHex(e.SIPHA1SHA256, sha256.Size); err != nil {
			errs = append(errs, fmt.Errorf("sip_ha1_sha256: %w", err))
		}
	}
	if e.WebPassword == "" && e.SIPHA1MD5 == "" && e.SIPHA1SHA256 == "" {
		errs = append(errs, errors.New("no credentials: want web_password and/or sip_ha1_md5/sip_ha1_sha256"))
	}
	return errs
}

func checkName(name string) error {
	if nameRE.MatchString(name) {
		return nil
	}
	if name == "" {
		return errors.New("missing")
	}
	return fmt.Errorf("%q: want 1 to %d of A-Z a-z 0-9 . _ -", name, maxNameLen)
}

func checkDisplayName(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case utf8.RuneCountInString(s) > maxDisplayNameLen:
		return fmt.Errorf("longer than %d characters", maxDisplayNameLen)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		// It may end up in SIP headers and HTML; a line break there is an injection.
		return errors.New("contains control characters")
	}
	return nil
}

func checkRealm(realm string) error {
	switch {
	case realm == "":
		return errors.New("missing")
	case strings.TrimSpace(realm) != realm:
		return fmt.Errorf("%q: leading or trailing space", realm)
	case len(realm) > maxRealmLen:
		return fmt.Errorf("longer than %d bytes", maxRealmLen)
	case strings.IndexFunc(realm, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) >= 0:
		// It is sent as a quoted string in WWW-Authenticate.
		return fmt.Errorf("%q: want printable ASCII without quotes or backslashes", realm)
	}
	return nil
}

func checkRoles(roles []string) []error {
	if len(roles) == 0 {
		return []error{errors.New("roles: want at least one of agent, admin")}
	}
	var errs []error
	for i, r := range roles {
		switch {
		case r != RoleAgent && r != RoleAdmin:
			errs = append(errs, fmt.Errorf("roles: unknown role %q: want agent or admin", r))
		case slices.Index(roles, r) < i:
			errs = append(errs, fmt.Errorf("roles: %q listed twice", r))
		}
	}
	return errs
}

// bcryptAlphabet is bcrypt's base64 alphabet.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func checkBcrypt(h string) error {
	// $2a$12$ + 22 characters of salt + 31 of hash.
	if len(h) != 60 || !(strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")) ||
		h[6] != '$' || strings.Trim(h[7:], bcryptAlphabet) != "" {
		return errors.New("not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
	}
	c, err := bcrypt.Cost([]byte(h))
	if err != nil {
		return fmt.Errorf("not a bcrypt hash: %w", err)
	}
	if c < MinCost || c > MaxCost {
		return fmt.Errorf("bcrypt cost %d: want %d to %d", c, MinCost, MaxCost)
	}
	return nil
}

func checkHex(s string, size int) error {
	if len(s) != 2*size {
		return fmt.Errorf("%d characters: want %d hex digits", len(s), 2*size)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("not hex: %q", s)
	}
	return nil
}

// Realm is the realm the file's HA1 hashes were computed for.
func (s *Store) Realm() string { return s.realm }

// Lookup returns the named user. Names are matched exactly.
func (s *Store) Lookup(name string) (User, bool) {
	u, ok := s.users[name]
	if !ok {
		return User{}, false
	}
	return u.clone(), true
}

// CheckWebPassword verifies a web login and returns the user on success. For an unknown name
// or a user without web_password it still runs one bcrypt comparison, against a fixed dummy
// hash of the usual cost, so the time taken does not reveal which names exist.
func (s *Store) CheckWebPassword(name, password string) (User, bool) {
	u, ok := s.users[name]
	if !ok || u.webHash == nil {
		_ = s.compare(s.dummy, []byte(password))
		return User{}, false
	}
	if s.compare(u.webHash, []byte(password)) != nil {
		return User{}, false
	}
	return u.clone(), true
}

// HA1 returns the user's lower-case hex HA1 for a digest algorithm, "MD5" or "SHA-256"
// (case-insensitive, as SIP tokens are). For the -sess variants the caller derives the session
// key from this base HA1. False when the user is unknown or has no hash for the algorithm.
func (s *Store) HA1(name, algorithm string) (string, bool) {
	u, ok := s.users[name]
	if !ok {
		return "", false
	}
	var h string
	switch {
	case strings.EqualFold(algorithm, AlgorithmMD5):
		h = u.ha1MD5
	case strings.EqualFold(algorithm, AlgorithmSHA256):
		h = u.ha1SHA256
	}
	return h, h != ""
}

// UsesDemoPasswords reports whether any user's password is DemoPassword. It compares the HA1
// (MD5, else SHA-256) with the demo password's, which costs no bcrypt; a user with only a web
// password is not checked.
func (s *Store) UsesDemoPasswords() bool {
	for _, u := range s.users {
		switch {
		case u.ha1MD5 != "":
			if u.ha1MD5 == ha1MD5(u.Name, s.realm, DemoPassword) {
				return true
			}
		case u.ha1SHA256 != "":
			if u.ha1SHA256 == ha1SHA256(u.Name, s.realm, DemoPassword) {
				return true
			}
		}
	}
	return false
}

func ha1MD5(name, realm, password string) string {
	sum := md5.Sum([]byte(name + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

func ha1SHA256(name, realm, password string) string {
	sum := sha256.Sum256([]byte(name + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}
