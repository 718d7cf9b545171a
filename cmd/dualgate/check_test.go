package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheckWarnsAboutAnExposedAdminListener(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, dir, "jwt.secret", []byte("a-secret-of-more-than-thirty-two-bytes-for-hs256"))
	for _, tc := range []struct {
		admin, pprof string
		code         int
		want, not    string
	}{
		{"127.0.0.1:9090", "", 0, "config OK", "WARNING"},
		{"0.0.0.0:9090", "", 0, `WARNING: ADMIN LISTENER NOT ON LOOPBACK: http.admin_listen "0.0.0.0:9090"`, ""},
		{"", ":6060", 0, `WARNING: ADMIN LISTENER NOT ON LOOPBACK: -pprof ":6060"`, ""},
		{"", "127.0.0.1:6060", 0, "config OK", "WARNING"},
		{"", "6060", 1, `-pprof "6060": address 6060: missing port in address`, "config OK"},
		{"127.0.0.1:9090", "127.0.0.1:6060", 1, "already serves pprof", "config OK"},
		{"127.0.0.1", "", 1, `http.admin_listen "127.0.0.1"`, "config OK"},
	} {
		extra := ""
		if tc.admin != "" {
			extra = ", admin_listen: '" + tc.admin + "'"
		}
		path := writeTestFile(t, dir, "gw.yaml", []byte(`
sip: {listen: ['udp:127.0.0.1:0']}
dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}
http: {listen: '127.0.0.1:0', jwt: {secret_file: jwt.secret}`+extra+`}
`))
		var out, errOut bytes.Buffer
		code := check(path, tc.pprof, &out, &errOut)
		all := out.String() + errOut.String()
		if code != tc.code || !strings.Contains(all, tc.want) || tc.not != "" && strings.Contains(all, tc.not) {
			t.Errorf("admin %q -pprof %q: exit %d, output %q; want %d and %q", tc.admin, tc.pprof, code, all, tc.code, tc.want)
		}
	}
}
