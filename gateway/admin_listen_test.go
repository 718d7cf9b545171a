package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

const adminBase = `
sip: {listen: ['udp:127.0.0.1:0']}
dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}
`

func TestAdminListenThroughTheGateway(t *testing.T) {
	cfg, err := Parse([]byte(adminBase+`http: {listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', jwt: {ephemeral_secret: true}}`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, cfg)
	if gw.AdminAddr() == "" {
		t.Fatal("no admin listener")
	}
	get := func(url string) (int, string) {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	public, admin := "http://"+gw.HTTPAddr(), "http://"+gw.AdminAddr()
	// Both planes' series, on the admin listener only.
	if code, body := get(admin + "/metrics"); code != 200 || !strings.Contains(body, "gateway_dispatcher_destination_state") ||
		!strings.Contains(body, "go_goroutines") {
		t.Errorf("admin /metrics = %d, lacking a plane's series", code)
	}
	if code, _ := get(public + "/metrics"); code != 404 {
		t.Errorf("public /metrics = %d, want 404", code)
	}
	for _, base := range []string{public, admin} {
		if code, body := get(base + "/readyz"); code != 200 {
			t.Errorf("%s/readyz = %d %s", base, code, body)
		}
	}
	if code, _ := get(admin + "/debug/pprof/"); code != 200 {
		t.Errorf("admin pprof index = %d", code)
	}
}

func TestAdminListenConfig(t *testing.T) {
	_, err := Parse([]byte(adminBase+`http: {admin_listen: 'localhost', jwt: {ephemeral_secret: true}}`), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `http.admin_listen "localhost"`) || !strings.Contains(err.Error(), "missing port") {
		t.Errorf("admin_listen without a port: %v", err)
	}
	for addr, warn := range map[string]bool{
		"127.0.0.1:9090": false, "[::1]:9090": false, "localhost:9090": false,
		"0.0.0.0:9090": true, ":9090": true, "10.1.2.3:9090": true, "[::]:9090": true,
	} {
		cfg, err := Parse([]byte(adminBase+`http: {admin_listen: '`+addr+`', jwt: {ephemeral_secret: true}}`), t.TempDir())
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		got := strings.Join(cfg.Warnings(), "\n")
		if strings.Contains(got, "ADMIN LISTENER NOT ON LOOPBACK") != warn || warn && !strings.Contains(got, addr) {
			t.Errorf("admin_listen %s: warnings %q, want a loopback warning: %v", addr, got, warn)
		}
	}
}
