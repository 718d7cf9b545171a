package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// TestAdminThroughTheGateway drives the real adapters: login against the demo users file, then
// the admin API changing the real dispatcher.
func TestAdminThroughTheGateway(t *testing.T) {
	usersFile, err := filepath.Abs("../configs/users.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(`
sip: {listen: ['udp:127.0.0.1:0']}
http: {listen: '127.0.0.1:0', jwt: {ephemeral_secret: true}}
users_file: `+usersFile+`
dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}, {set: 1, uri: 'sip:127.0.0.1:5071'}]}
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, cfg)
	base := "http://" + gw.HTTPAddr()

	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	login := func(user, pass string) (int, string) {
		code, body := call("POST", "/api/login", "", `{"username":"`+user+`","password":"`+pass+`"}`)
		var s struct{ Token string }
		_ = json.Unmarshal([]byte(body), &s)
		return code, s.Token
	}
	if code, _ := login("admin", "wrong"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	code, agent := login("1001", "dualgate-demo")
	if code != 200 {
		t.Fatalf("agent login: %d", code)
	}
	if code, _ := call("GET", "/api/admin/dispatcher", agent, ""); code != 403 {
		t.Errorf("agent on the admin API: %d, want 403", code)
	}
	code, admin := login("admin", "dualgate-demo")
	if code != 200 {
		t.Fatalf("admin login: %d", code)
	}
	if code, body := call("POST", "/api/admin/dispatcher/state", admin, `{"set":1,"uri":"sip:127.0.0.1:5071","state":"draining"}`); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	if st := gw.Dispatcher().Find(1, "sip:127.0.0.1:5071").State(); st != dispatcher.Draining {
		t.Errorf("the dispatcher did not change: %s", st)
	}
	if code, body := call("GET", "/api/admin/dispatcher", admin, ""); code != 200 || !strings.Contains(body, `"draining"`) {
		t.Errorf("list after drain: %d %s", code, body)
	}
	if code, body := call("GET", "/metrics", "", ""); code != 200 || !strings.Contains(body, "gateway_dispatcher_destination_state") ||
		!strings.Contains(body, "gateway_http_requests_total") {
		t.Errorf("/metrics lacks a plane's series: %d", code)
	}
}

// startGateway builds and starts a gateway from cfg and stops it when the test ends.
func startGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	gw, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(context.Background()) })
	return gw
}
