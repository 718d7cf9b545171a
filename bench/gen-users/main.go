// Command gen-users writes the users file and the sipp injection file of the registration
// benchmark (bench/register-bench.sh): N agents u0000001..uNNNNNNN with one password and an
// MD5 HA1 only (sipp answers digest challenges with MD5), no web password.
//
//	go run ./bench/gen-users -n 100000 -users users.yaml -csv users.csv
package main

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
)

func main() {
	n := flag.Int("n", 100000, "number of users")
	realm := flag.String("realm", "dualgate", "digest realm")
	password := flag.String("password", "bench-secret", "password of every user")
	prefix := flag.String("prefix", "u", "user name prefix; names are prefix + 7 digits")
	usersPath := flag.String("users", "users.yaml", "users file to write")
	csvPath := flag.String("csv", "", "sipp injection file to write (SEQUENTIAL, one name per line); empty: none")
	flag.Parse()
	if *n < 1 || *n > 9999999 {
		fail(fmt.Errorf("-n %d: want 1 to 9999999", *n))
	}
	fail(write(*usersPath, func(w *bufio.Writer) {
		fmt.Fprintf(w, "# %d benchmark users, password %q: bench/gen-users, for bench/register-bench.sh only\n", *n, *password)
		fmt.Fprintf(w, "realm: %s\nusers:\n", *realm)
		for i := 1; i <= *n; i++ {
			name := fmt.Sprintf("%s%07d", *prefix, i)
			sum := md5.Sum([]byte(name + ":" + *realm + ":" + *password))
			fmt.Fprintf(w, "  - {name: %s, roles: [agent], sip_ha1_md5: %s}\n", name, hex.EncodeToString(sum[:]))
		}
	}))
	if *csvPath != "" {
		fail(write(*csvPath, func(w *bufio.Writer) {
			w.WriteString("SEQUENTIAL\n")
			for i := 1; i <= *n; i++ {
				fmt.Fprintf(w, "%s%07d;\n", *prefix, i)
			}
		}))
	}
}

// write creates path (mode 0600: the HA1s are password-equivalent) and fills it.
func write(path string, fill func(*bufio.Writer)) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fill(w)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen-users:", err)
		os.Exit(1)
	}
}
