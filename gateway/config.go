// Package gateway is the composition root: configuration (defaults, strict decoding, whole
// validation), wiring of the planes, and their lifecycle.
package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dualgate/dualgate/bridge"
	"github.com/dualgate/dualgate/sip"
	"github.com/dualgate/dualgate/sip/dispatcher"
	"github.com/dualgate/dualgate/users"
	"github.com/dualgate/dualgate/web"
)

// Config is the whole gateway configuration file.
type Config struct {
	Log        LogConfig        `yaml:"log"`
	SIP        sip.Config       `yaml:"sip"`
	Dispatcher DispatcherConfig `yaml:"dispatcher"`
	HTTP       web.Config       `yaml:"http"`
	// Bridge bounds each agent WebSocket (RFC 7118); the HTTP plane's limits apply to the
	// upgrade, these to the SIP messages on it.
	Bridge bridge.Config `yaml:"bridge"`
	// UsersFile is the users file both planes share (web logins now, SIP digest later),
	// relative to the config file. Default none: no embedded login.
	UsersFile string `yaml:"users_file"`

	// dir is where relative paths in the file are resolved from; path is the file itself
	// (empty for the embedded config), re-read by a reload.
	dir  string
	path string
}

// LogConfig selects the root logger.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or text. Default json.
	Format string `yaml:"format"`
}

// DispatcherConfig lists the backend sets and how they are probed.
type DispatcherConfig struct {
	// ListFile is a Kamailio-format dispatcher.list, relative to the config file. Its
	// destinations are added to Destinations.
	ListFile string `yaml:"list_file"`
	// Destinations are given inline.
	Destinations []dispatcher.Spec `yaml:"destinations"`
	// Probe controls OPTIONS health probing.
	Probe dispatcher.ProbeConfig `yaml:"probe"`
}

// Defaults is the configuration every file is decoded over.
func Defaults() Config {
	return Config{
		Log:        LogConfig{Level: "info", Format: "json"},
		SIP:        sip.Defaults(),
		Dispatcher: DispatcherConfig{Probe: dispatcher.DefaultProbeConfig()},
		HTTP:       web.Defaults(),
	}
}

// Load reads a config file, decodes it strictly over the defaults and validates it whole.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data, filepath.Dir(path))
	cfg.path = path
	return cfg, err
}

// Parse decodes config bytes; dir resolves relative paths such as dispatcher.list_file.
func Parse(data []byte, dir string) (Config, error) {
	cfg := Defaults()
	cfg.dir = dir
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file decodes to io.EOF and means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("decode config: %w", err)
	}
	cfg.resolvePaths()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// resolvePaths makes the file paths in the config relative to the config file's directory, so
// a config works the same from any working directory.
func (c *Config) resolvePaths() {
	rel := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(c.dir, *p)
		}
	}
	rel(&c.UsersFile)
	rel(&c.SIP.TLS.CertFile)
	rel(&c.SIP.TLS.KeyFile)
	rel(&c.SIP.TLS.ClientCAFile)
	rel(&c.SIP.TLS.CAFile)
	rel(&c.HTTP.TLS.CertFile)
	rel(&c.HTTP.TLS.KeyFile)
	rel(&c.HTTP.TLS.ACME.CacheDir)
	rel(&c.HTTP.TLS.ACME.CAFile)
	rel(&c.HTTP.JWT.SecretFile)
	rel(&c.HTTP.JWT.JWKSFile)
	for i := range c.HTTP.JWT.PublicKeyFiles {
		rel(&c.HTTP.JWT.PublicKeyFiles[i])
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want json or text", c.Log.Format))
	}
	if err := c.SIP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.UsersFile != "" {
		if _, err := users.Load(c.UsersFile); err != nil {
			errs = append(errs, fmt.Errorf("users_file: %w", err))
		}
	}
	for _, e := range c.Dispatcher.Probe.Validate() {
		errs = append(errs, fmt.Errorf("dispatcher.%w", e))
	}
	specs, err := c.DestinationSpecs()
	if err != nil {
		errs = append(errs, err)
	} else if _, err := dispatcher.New(specs, slog.New(slog.DiscardHandler), nil); err != nil {
		errs = append(errs, fmt.Errorf("dispatcher: %w", err))
	} else {
		have := map[int]bool{}
		for _, s := range specs {
			have[s.SetID] = true
		}
		for i, r := range c.SIP.Routes {
			if !have[r.Set] {
				errs = append(errs, fmt.Errorf("sip.routes[%d] (%s): dispatcher set %d has no destinations", i, r.Name, r.Set))
			}
		}
	}
	return errors.Join(errs...)
}

// DestinationSpecs gathers the destinations from the list file and the inline entries.
func (c Config) DestinationSpecs() ([]dispatcher.Spec, error) {
	specs := append([]dispatcher.Spec(nil), c.Dispatcher.Destinations...)
	if c.Dispatcher.ListFile == "" {
		return specs, nil
	}
	p := c.Dispatcher.ListFile
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.dir, p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("dispatcher.list_file: %w", err)
	}
	defer f.Close()
	fromFile, err := dispatcher.ParseList(f)
	if err != nil {
		return nil, fmt.Errorf("dispatcher.list_file %s: %w", p, err)
	}
	for i := range fromFile {
		fromFile[i].Origin = p + " " + fromFile[i].Origin
	}
	return append(specs, fromFile...), nil
}

// Warnings are problems that do not stop the gateway but that an operator must hear about.
func (c Config) Warnings() []string {
	var out []string
	// The admin listener has no authentication and serves pprof (heap contents, command line).
	for _, a := range []struct{ key, addr string }{{"http.admin_listen", c.HTTP.AdminListen}, {"-pprof", c.HTTP.DebugListen}} {
		if a.addr != "" && !isLoopback(a.addr) {
			out = append(out, fmt.Sprintf("ADMIN LISTENER NOT ON LOOPBACK: %s %q serves /metrics and pprof without "+
				"authentication to anyone who can reach it; bind it to 127.0.0.1 or ::1, or firewall it to the monitoring network.",
				a.key, a.addr))
		}
	}
	if c.UsersFile == "" {
		return out
	}
	st, err := users.Load(c.UsersFile)
	if err != nil || !st.UsesDemoPasswords() {
		return out
	}
	exposed := !isLoopback(c.HTTP.Listen)
	for _, l := range c.SIP.Listen {
		if _, addr, ok := strings.Cut(l, ":"); ok && !isLoopback(addr) {
			exposed = true
		}
	}
	if exposed {
		out = append(out, "DEMO CREDENTIALS: "+c.UsersFile+" holds the demo password \"dualgate-demo\" and a "+
			"listener is not on loopback. Anyone who can reach it can log in. Replace the users with `dualgate passwd`.")
	}
	return out
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Logger builds the root logger the config asks for.
func (c Config) Logger() *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if c.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
