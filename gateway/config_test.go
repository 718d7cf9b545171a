package gateway

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/dualgate/dualgate/users"
)

func TestExampleConfigsParse(t *testing.T) {
	// production.yaml takes its JWT secret from the environment, as a deployment would.
	t.Setenv("DUALGATE_JWT_SECRET", "example-secret-example-secret-example-secret-48b")
	// The bench configs are examples too: a bench that cannot start is found here, not when
	// someone finally runs it.
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	bench, err := filepath.Glob("../bench/*.yaml")
	if err != nil || len(bench) == 0 {
		t.Fatalf("no bench configs found: %v", err)
	}
	files = append(files, bench...)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if filepath.Base(f) == "users.yaml" { // the users file has its own format
				if _, err := users.Load(f); err != nil {
					t.Fatalf("example users file does not load: %v", err)
				}
				return
			}
			if _, err := Load(f); err != nil {
				t.Fatalf("example config does not load: %v", err)
			}
		})
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	// The defaults route INVITEs to set 1, so a config with no destinations at all is refused
	// with a reason rather than started with a route to nowhere.
	_, err := Parse(nil, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "set 1 has no destinations") {
		t.Fatalf("empty config: want the unrouted set reported, got %v", err)
	}
	cfg, err := Parse([]byte("dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}\nhttp: {jwt: {ephemeral_secret: true}}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SIP.Listen; len(got) != 2 || got[0] != "udp:127.0.0.1:5060" {
		t.Errorf("default listeners = %v", got)
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	bad := `
log: {level: loud, format: xml}
sip:
  listen: ["sctp:127.0.0.1:5060", "udp:nohost:5060"]
  max_message_size: 10
  max_inflight: 0
  routes: [{name: r, set: 7, algorithm: 7, ruri_user: "("}]
dispatcher:
  destinations: [{set: 1, uri: "http://x"}]
  probe: {interval: 0s, threshold: 0, reply_codes: ["2yy"]}
`
	_, err := Parse([]byte(bad), t.TempDir())
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"log.level", "log.format", "sctp", "host must be an IP", "max_message_size",
		"max_inflight", "algorithm 7", "ruri_user", "http", "probe.interval", "probe.threshold", "2yy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestPathsResolveAgainstTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.secret"), []byte("0123456789abcdef0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(`
dispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}
http:
  jwt: {secret_file: jwt.secret}
  tls: {mode: acme, acme: {hosts: [gw.example.com], cache_dir: acme}}
`), dir)
	if err != nil {
		t.Fatalf("relative secret_file not found next to the config: %v", err)
	}
	if got := cfg.HTTP.TLS.ACME.CacheDir; got != filepath.Join(dir, "acme") {
		t.Errorf("acme cache_dir = %q, want it under the config's directory", got)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Parse([]byte("sip: {listn: []}\n"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "listn") {
		t.Fatalf("misspelt key accepted: %v", err)
	}
}

func TestListFileRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ds.list"), []byte("1 sip:127.0.0.1:5070 0 0 weight=3\n1 bogus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Parse([]byte("dispatcher: {list_file: ds.list}\nhttp: {jwt: {ephemeral_secret: true}}"), dir)
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad list line not reported with its number: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ds.list"), []byte("1 sip:127.0.0.1:5070 0 0 weight=3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte("dispatcher: {list_file: ds.list}\nhttp: {jwt: {ephemeral_secret: true}}"), dir)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := cfg.DestinationSpecs()
	if err != nil || len(specs) != 1 || specs[0].Weight != 3 {
		t.Fatalf("specs = %+v, %v", specs, err)
	}
}

func TestReloadIsAllOrNothing(t *testing.T) {
	good := "sip: {listen: ['udp:127.0.0.1:0']}\nhttp: {listen: '127.0.0.1:0', jwt: {ephemeral_secret: true}}\ndispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}, {set: 1, uri: 'sip:127.0.0.1:5071'}]}"
	cfg, err := Parse([]byte(good), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, cfg)

	bad := cfg
	bad.Dispatcher.Destinations = append(bad.Dispatcher.Destinations[:1:1], bad.Dispatcher.Destinations[0]) // duplicate
	if err := gw.Reload(bad); err == nil {
		t.Fatal("reload with a duplicate destination accepted")
	}
	if n := len(gw.Dispatcher().Sets()[0].Dests); n != 2 {
		t.Fatalf("failed reload changed the sets: %d destinations", n)
	}
}

func TestMetricNamesLint(t *testing.T) {
	cfg, err := Parse([]byte("sip: {listen: ['udp:127.0.0.1:0']}\nhttp: {listen: '127.0.0.1:0', jwt: {ephemeral_secret: true}}\ndispatcher: {destinations: [{set: 1, uri: 'sip:127.0.0.1:5070'}]}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gw, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := gw.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	var sipSeries int
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "gateway_") {
			sipSeries++
		}
	}
	if sipSeries == 0 {
		t.Error("no gateway_ metrics registered")
	}
}
