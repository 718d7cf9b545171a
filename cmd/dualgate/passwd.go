package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/dualgate/dualgate/users"
)

// minPasswordLen is the shortest password `dualgate passwd` accepts, in characters.
const minPasswordLen = 12

// maxPasswordLine bounds what is read from a non-terminal stdin.
const maxPasswordLine = 4096

// passwdMain runs `dualgate passwd` and returns the exit status: 0 done, 1 failed, 2 bad usage.
func passwdMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := runPasswd(args, stdin, stdout, stderr)
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "dualgate passwd:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "dualgate passwd:", err)
		return 1
	}
}

type usageError struct{ error }

// runPasswd sets one user's password in a users file (adding the user if new): it reads the
// password twice without echo from a terminal, or one line from stdin otherwise, and writes
// the bcrypt hash and both SIP HA1s with users.Upsert. The password is never printed.
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("dualgate passwd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	file := flags.String("file", "", "users file to update (created if missing); required")
	user := flags.String("user", "", "user name (SIP user and web login); required")
	name := flags.String("name", "", "display name (default: the user's current one)")
	roles := flags.String("roles", "", "comma-separated roles: agent, admin (default: the user's current ones; required for a new user)")
	realm := flags.String("realm", "", `SIP realm for a new file (default "dualgate"); an existing file keeps its own`)
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), `usage: dualgate passwd -file FILE -user NAME [-name DISPLAY] [-roles agent,admin] [-realm REALM]

Sets a user's password in a users file, adding the user if new. From a terminal the password
is read twice without echo; otherwise one line is read from stdin (the line break is not part
of it). At least 12 characters.

`)
		flags.PrintDefaults()
	}
	set, err := parseFlags(flags, args)
	if err != nil {
		return err
	}
	switch {
	case *file == "":
		return usageError{errors.New("-file is required")}
	case *user == "":
		return usageError{errors.New("-user is required")}
	}

	// What the file already says decides the realm and the defaults; a file that does not load
	// is refused before asking for a password.
	var current *users.User
	entryRealm := *realm
	store, err := users.Load(*file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if entryRealm == "" {
			entryRealm = "dualgate"
		}
	case err != nil:
		return err
	default:
		if set["realm"] && *realm != store.Realm() {
			return fmt.Errorf("%s uses realm %q, not %q: changing the realm would invalidate every user's SIP hashes", *file, store.Realm(), *realm)
		}
		entryRealm = store.Realm()
		if u, ok := store.Lookup(*user); ok {
			current = &u
		}
	}
	display := *name
	if !set["name"] && current != nil {
		display = current.DisplayName
	}
	var roleList []string
	switch {
	case set["roles"]:
		for r := range strings.SplitSeq(*roles, ",") {
			if r = strings.TrimSpace(r); r != "" {
				roleList = append(roleList, r)
			}
		}
	case current != nil:
		roleList = current.Roles
	default:
		return usageError{fmt.Errorf("-roles is required for the new user %q", *user)}
	}

	password, err := readPassword(stdin, stderr, *user)
	if err != nil {
		return err
	}
	if err := checkPasswordPolicy(password); err != nil {
		return err
	}
	entry, err := users.NewEntry(*user, display, entryRealm, password, roleList)
	if err != nil {
		return err
	}
	if err := users.Upsert(*file, entry); err != nil {
		return err
	}
	verb := "added"
	if current != nil {
		verb = "updated"
	}
	fmt.Fprintf(stdout, "%s: user %q %s (realm %q, roles %s)\n", *file, *user, verb, entryRealm, strings.Join(roleList, ","))
	return nil
}

// readPassword reads the password twice without echo when stdin is a terminal, else one line.
func readPassword(stdin io.Reader, prompt io.Writer, user string) (string, error) {
	if f, ok := stdin.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprintf(prompt, "New password for %s: ", user)
		first, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(prompt, "Retype it: ")
		second, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(first) != string(second) {
			return "", errors.New("the passwords do not match; nothing changed")
		}
		return string(first), nil
	}

	line, err := bufio.NewReader(io.LimitReader(stdin, maxPasswordLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	if errors.Is(err, io.EOF) && len(line) == maxPasswordLine {
		return "", fmt.Errorf("read password from stdin: no line break within %d bytes", maxPasswordLine)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("no password on stdin")
	}
	return line, nil
}

func checkPasswordPolicy(p string) error {
	switch {
	case !utf8.ValidString(p):
		return errors.New("password is not valid UTF-8")
	case utf8.RuneCountInString(p) < minPasswordLen:
		return fmt.Errorf("password too short: want at least %d characters", minPasswordLen)
	case len(p) > 72:
		return errors.New("password too long: bcrypt uses at most 72 bytes")
	case p == users.DemoPassword:
		return errors.New("that is the published demo password; choose another")
	}
	return nil
}

// parseFlags parses a subcommand's flags, which take no arguments, and reports which flags were
// given (a flag given empty is not the same as one left out). -h is returned as is; any other
// problem is a usageError.
func parseFlags(flags *flag.FlagSet, args []string) (map[string]bool, error) {
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if flags.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(flags.Args(), " "))}
	}
	set := map[string]bool{}
	flags.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, nil
}
