package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// fakeAdmin stands in for the SIP plane behind the Admin interface (the thing under test here
// is the HTTP plane; the real adapter is exercised end to end in the gateway tests).
type fakeAdmin struct {
	mu        sync.Mutex
	state     map[string]string
	reloadErr error
	lifted    bool
}

func (f *fakeAdmin) DispatcherSets() []DispatcherSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ds []Destination
	for _, uri := range []string{"sip:10.0.0.1:5060", "sip:10.0.0.2:5060"} {
		st := f.state[uri]
		if st == "" {
			st = "active"
		}
		ds = append(ds, Destination{URI: uri, State: st})
	}
	return []DispatcherSet{{ID: 1, Destinations: ds}}
}

func (f *fakeAdmin) SetDestinationState(set int, uri, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if set != 1 || (uri != "sip:10.0.0.1:5060" && uri != "sip:10.0.0.2:5060") {
		return fmt.Errorf("%w: set %d has no destination %s", ErrNotFound, set, uri)
	}
	f.state[uri] = state
	return nil
}

func (f *fakeAdmin) ReloadDispatcher() error { return f.reloadErr }
func (f *fakeAdmin) Registrations() []Registration {
	return []Registration{{User: "1001", Contact: "sip:1001@192.168.1.50", Source: "203.0.113.7:40000", Transport: "UDP"}}
}
func (f *fakeAdmin) Bans() []Ban {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lifted {
		return []Ban{}
	}
	return []Ban{{Prefix: "198.51.100.9/32", Reason: "flood"}}
}
func (f *fakeAdmin) LiftBan(addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case addr == "198.51.100.9" && !f.lifted:
		f.lifted = true
		return nil
	case addr == "not-an-ip":
		return fmt.Errorf("%w: %q is not an IP address", ErrInvalid, addr)
	}
	return fmt.Errorf("%w: no ban covers %s", ErrNotFound, addr)
}
func (f *fakeAdmin) Dialogs() []Dialog {
	return []Dialog{{CallID: "c1", Backend: "sip:10.0.0.1:5060", State: "confirmed"}}
}

func do(t *testing.T, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := clientFrom("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestAdminAPI(t *testing.T) {
	fa := &fakeAdmin{state: map[string]string{}}
	s := startServer(t, nil, Deps{Admin: fa})
	base := "http://" + s.Addr().String() + "/api/admin"
	admin := map[string]string{"Authorization": "Bearer " + token(t, s, "admin", "admin")}
	agent := map[string]string{"Authorization": "Bearer " + token(t, s, "1001", "agent")}

	t.Run("no token is 401", func(t *testing.T) {
		if code, _ := do(t, "GET", base+"/dispatcher", "", nil); code != 401 {
			t.Errorf("got %d", code)
		}
	})
	t.Run("agent token is 403", func(t *testing.T) {
		if code, _ := do(t, "GET", base+"/dispatcher", "", agent); code != 403 {
			t.Errorf("got %d", code)
		}
		if code, _ := do(t, "POST", base+"/dispatcher/state", `{"set":1,"uri":"sip:10.0.0.1:5060","state":"draining"}`, agent); code != 403 {
			t.Errorf("agent drained a backend: %d", code)
		}
	})
	t.Run("admin lists sets", func(t *testing.T) {
		code, body := do(t, "GET", base+"/dispatcher", "", admin)
		var got struct{ Sets []DispatcherSet }
		if code != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got.Sets) != 1 || len(got.Sets[0].Destinations) != 2 {
			t.Fatalf("got %d %s", code, body)
		}
	})
	t.Run("admin drains a destination", func(t *testing.T) {
		code, body := do(t, "POST", base+"/dispatcher/state", `{"set":1,"uri":"sip:10.0.0.1:5060","state":"draining"}`, admin)
		if code != 200 || !strings.Contains(body, `"draining"`) {
			t.Fatalf("got %d %s", code, body)
		}
		if fa.state["sip:10.0.0.1:5060"] != "draining" {
			t.Error("the change did not reach the SIP plane")
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			body string
			want int
		}{
			{`{"set":1,"uri":"sip:10.0.0.9:5060","state":"draining"}`, 404},
			{`{"set":1,"uri":"sip:10.0.0.1:5060","state":"inactive"}`, 422},
			{`{"set":1,"uri":"sip:10.0.0.1:5060","state":"draining","extra":1}`, 400},
			{`not json`, 400},
		} {
			if code, body := do(t, "POST", base+"/dispatcher/state", tc.body, admin); code != tc.want {
				t.Errorf("%s: got %d %s, want %d", tc.body, code, body, tc.want)
			}
		}
	})
	t.Run("reload refused says why", func(t *testing.T) {
		fa.reloadErr = fmt.Errorf("dispatcher reload rejected: line 3: bad port")
		defer func() { fa.reloadErr = nil }()
		code, body := do(t, "POST", base+"/dispatcher/reload", "", admin)
		if code != 422 || !strings.Contains(body, "line 3") {
			t.Errorf("got %d %s", code, body)
		}
	})
	t.Run("dialogs", func(t *testing.T) {
		if code, body := do(t, "GET", base+"/dialogs", "", admin); code != 200 || !strings.Contains(body, `"c1"`) {
			t.Errorf("got %d %s", code, body)
		}
	})
	t.Run("registrations", func(t *testing.T) {
		if code, body := do(t, "GET", base+"/registrations", "", admin); code != 200 || !strings.Contains(body, `"source":"203.0.113.7:40000"`) {
			t.Errorf("got %d %s", code, body)
		}
		if code, _ := do(t, "GET", base+"/registrations", "", agent); code != 403 {
			t.Errorf("agent listed registrations: %d", code)
		}
	})
	t.Run("bans listed and lifted", func(t *testing.T) {
		if code, body := do(t, "GET", base+"/bans", "", admin); code != 200 || !strings.Contains(body, `"reason":"flood"`) {
			t.Fatalf("got %d %s", code, body)
		}
		for _, tc := range []struct {
			body string
			want int
		}{
			{`{"address":"not-an-ip"}`, 422},
			{`{"address":"192.0.2.1"}`, 404},
			{`{"addr":"192.0.2.1"}`, 400},
			{`{"address":"198.51.100.9"}`, 200},
		} {
			if code, body := do(t, "POST", base+"/bans/lift", tc.body, admin); code != tc.want {
				t.Errorf("%s: got %d %s, want %d", tc.body, code, body, tc.want)
			}
		}
		if code, body := do(t, "GET", base+"/bans", "", admin); code != 200 || strings.Contains(body, "198.51.100.9") {
			t.Errorf("after the lift: %d %s", code, body)
		}
	})
}

func TestAdminCookieNeedsSameOrigin(t *testing.T) {
	fa := &fakeAdmin{state: map[string]string{}}
	s := startServer(t, func(c *Config) { c.AllowedOrigins = []string{"https://ops.example.com"} }, Deps{Admin: fa})
	host := s.Addr().String()
	base := "http://" + host + "/api/admin/dispatcher/state"
	cookie := "dualgate_session=" + token(t, s, "admin", "admin")
	body := `{"set":1,"uri":"sip:10.0.0.1:5060","state":"disabled"}`
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"http://evil.example", 403},
		{"", 403},
		{"http://" + host, 200},
		{"https://ops.example.com", 200},
	} {
		code, _ := do(t, "POST", base, body, map[string]string{"Cookie": cookie, "Origin": tc.origin})
		if code != tc.want {
			t.Errorf("cookie state change with Origin %q: %d, want %d", tc.origin, code, tc.want)
		}
	}
	// Reading with the cookie needs no Origin: a cross-site GET cannot read the answer anyway.
	if code, _ := do(t, "GET", "http://"+host+"/api/admin/dispatcher", "", map[string]string{"Cookie": cookie}); code != 200 {
		t.Errorf("cookie GET: %d", code)
	}
}
