package users

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// maxPasswordBytes is bcrypt's limit: it would ignore (and x/crypto refuses) anything longer.
const maxPasswordBytes = 72

// NewEntry builds a complete user entry from a plain password: a bcrypt web_password (cost
// DefaultCost) and both SIP HA1s for realm. It checks name, display name, roles and realm as
// Parse would, so the entry is loadable. It sets no password policy beyond bcrypt's 72-byte
// limit; `dualgate passwd` enforces one.
func NewEntry(name, displayName, realm, password string, roles []string) (EntryYAML, error) {
	return newEntry(name, displayName, realm, password, roles, DefaultCost)
}

func newEntry(name, displayName, realm, password string, roles []string, cost int) (EntryYAML, error) {
	var errs []error
	if err := checkRealm(realm); err != nil {
		errs = append(errs, fmt.Errorf("realm: %w", err))
	}
	switch {
	case password == "":
		errs = append(errs, errors.New("password: empty"))
	case len(password) > maxPasswordBytes:
		errs = append(errs, fmt.Errorf("password: longer than %d bytes (bcrypt's limit)", maxPasswordBytes))
	}
	e := EntryYAML{Name: name, DisplayName: displayName, Roles: append([]string(nil), roles...), realm: realm}
	errs = append(errs, e.checkIdentity()...)
	if len(errs) > 0 {
		return EntryYAML{}, errors.Join(errs...)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return EntryYAML{}, fmt.Errorf("bcrypt: %w", err)
	}
	e.WebPassword = string(h)
	e.SIPHA1MD5 = ha1MD5(name, realm, password)
	e.SIPHA1SHA256 = ha1SHA256(name, realm, password)
	return e, nil
}

// Upsert writes e into the users file at path, replacing the user of the same name or adding
// it at the end, and keeping every other user, the realm and the comments. A missing file is
// created with the realm e was built for. The file must load cleanly before and after; it is
// written atomically (temporary file, then rename) with mode 0600. Upsert takes no lock:
// concurrent writers can lose each other's change.
func Upsert(path string, e EntryYAML) error {
	if errs := e.validate(); len(errs) > 0 {
		return fmt.Errorf("entry %q: %w", e.Name, errors.Join(errs...))
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real // replace the file a link points to, not the link
	}

	data, err := os.ReadFile(path)
	var out []byte
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if e.realm == "" {
			return fmt.Errorf("users file %s does not exist and the entry does not say its realm: build it with NewEntry", path)
		}
		out, err = encode(&fileYAML{Realm: e.realm, Users: []EntryYAML{e}})
	case err != nil:
		return fmt.Errorf("read users file: %w", err)
	default:
		var s *Store
		if s, err = Parse(data); err != nil {
			return fmt.Errorf("users file %s has problems, not changed: %w", path, err)
		}
		if e.realm != "" && e.realm != s.Realm() {
			return fmt.Errorf("entry %q was hashed for realm %q but %s uses realm %q", e.Name, e.realm, path, s.Realm())
		}
		out, err = upsertNode(data, e)
	}
	if err != nil {
		return err
	}

	// What we write must load and hold the entry, or the file stays as it was.
	s, err := Parse(out)
	if err != nil {
		return fmt.Errorf("updated users file would not load, not written: %w", err)
	}
	if _, ok := s.Lookup(e.Name); !ok {
		return fmt.Errorf("updated users file lacks %q, not written", e.Name)
	}
	return writeFileAtomic(path, out, 0o600)
}

// upsertNode edits the YAML node tree, so comments and the other users survive as written.
func upsertNode(data []byte, e EntryYAML) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("decode users file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("users file: want a mapping at the top")
	}
	root := doc.Content[0]

	var seq *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "users" {
			seq = root.Content[i+1]
			break
		}
	}
	switch {
	case seq == nil:
		seq = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "users"}, seq)
	case seq.Kind == yaml.ScalarNode: // "users:" with nothing, i.e. null
		*seq = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", LineComment: seq.LineComment}
	case seq.Kind != yaml.SequenceNode:
		return nil, errors.New("users file: users is not a list")
	}
	seq.Style &^= yaml.FlowStyle // "users: []" grows into a block list

	item := &yaml.Node{}
	if err := item.Encode(e); err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	replaced := false
	for i, old := range seq.Content {
		if mappingValue(old, "name") == e.Name {
			keepComments(old, item)
			seq.Content[i] = item
			replaced = true
			break
		}
	}
	if !replaced {
		seq.Content = append(seq.Content, item)
	}
	return encode(&doc)
}

// mappingValue is the scalar value of key in mapping m, "" if absent.
func mappingValue(m *yaml.Node, key string) string {
	if m.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1].Value
		}
	}
	return ""
}

// keepComments carries the comments of a replaced entry over to its replacement, key by key.
func keepComments(old, repl *yaml.Node) {
	repl.HeadComment, repl.LineComment, repl.FootComment = old.HeadComment, old.LineComment, old.FootComment
	for i := 0; i+1 < len(repl.Content); i += 2 {
		for j := 0; j+1 < len(old.Content); j += 2 {
			if old.Content[j].Value != repl.Content[i].Value {
				continue
			}
			k, ok := repl.Content[i], old.Content[j]
			k.HeadComment, k.LineComment, k.FootComment = ok.HeadComment, ok.LineComment, ok.FootComment
			v, ov := repl.Content[i+1], old.Content[j+1]
			v.LineComment = ov.LineComment
			break
		}
	}
}

func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode users file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode users file: %w", err)
	}
	return buf.Bytes(), nil
}

// writeFileAtomic replaces path with data: a temporary file in the same directory, synced,
// then renamed over path, so a reader sees the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write users file: %w", err)
	}
	// Make the rename itself durable; not every filesystem can sync a directory.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
