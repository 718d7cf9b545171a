// Package test holds cross-plane integration tests: the gateway runs in-process, and real
// peers (sipp as callers and as backends) talk to it over loopback.
package test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dualgate/dualgate/gateway"
	"github.com/dualgate/dualgate/sip"
)

func TestMain(m *testing.M) {
	// The gateway runs in this process, so the process-wide settings main applies apply here.
	sip.ApplyProcessSettings(sip.Defaults())
	os.Exit(m.Run())
}

func requireSipp(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatal("sipp not found: install the Debian package sip-tester (apt-get install sip-tester)")
	}
}

// freePort returns a port free for both UDP and TCP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startGateway runs the gateway in-process with a YAML config (%PORT% is replaced by its SIP
// port) and stops it when the test ends.
func startGateway(t *testing.T, port int, yamlCfg string) *gateway.Gateway {
	t.Helper()
	yamlCfg = strings.ReplaceAll(yamlCfg, "%PORT%", strconv.Itoa(port))
	cfg, err := gateway.Parse([]byte(yamlCfg), t.TempDir())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &lockedWriter{w: &bytes.Buffer{}}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw, err := gateway.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := gw.Stop(ctx); err != nil {
			t.Errorf("stop gateway: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	return gw
}

// sippProc is a sipp process this test started.
type sippProc struct {
	cmd      *exec.Cmd
	msgLog   string
	out      *bytes.Buffer
	done     chan error
	stopOnce sync.Once
}

func scenario(name string) string {
	p, err := filepath.Abs(filepath.Join("scenarios", name))
	if err != nil {
		panic(err)
	}
	return p
}

// startUAS starts a sipp backend on 127.0.0.1:port running scenario. It logs every message
// so tests can see what reached which backend.
func startUAS(t *testing.T, scen string, port int) *sippProc {
	t.Helper()
	return startUASAt(t, "127.0.0.1", scenario(scen), port)
}

// startUASAt starts a sipp UAS on ip:port with the scenario file at path (extra: more sipp
// arguments).
func startUASAt(t *testing.T, ip, path string, port int, extra ...string) *sippProc {
	t.Helper()
	dir := t.TempDir()
	p := &sippProc{msgLog: filepath.Join(dir, "messages.log"), out: &bytes.Buffer{}, done: make(chan error, 1)}
	args := append([]string{"-sf", path, "-i", ip, "-p", strconv.Itoa(port),
		"-nostdin", "-trace_msg", "-message_file", p.msgLog, "-trace_err", "-error_file", filepath.Join(dir, "err.log")}, extra...)
	p.cmd = exec.Command("sipp", args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sipp: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop() })
	waitUDPAt(t, ip, port)
	return p
}

// stop ends the backend (by the PID we started) and waits for it; once, however often it is
// called. The Wait goroutine owns the process state, so stop only signals and waits.
func (p *sippProc) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // fails harmlessly if it already exited
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitUDP waits until something listens on the UDP port (a bind on it fails).
func waitUDP(t *testing.T, port int) {
	t.Helper()
	waitUDPAt(t, "127.0.0.1", port)
}

func waitUDPAt(t *testing.T, ip string, port int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on udp port %d", port)
}

// received lists, in order, the requests a backend received as "METHOD call-id".
func (p *sippProc) received(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, lines := range sippReceived(t, p.msgLog) {
		var method, cid string
		for _, l := range lines {
			if method == "" {
				if m := requestLine.FindStringSubmatch(l); m != nil {
					method = m[1]
				}
			}
			if v, ok := strings.CutPrefix(l, "Call-ID:"); ok {
				cid = strings.TrimSpace(v)
			}
		}
		if method != "" {
			out = append(out, method+" "+cid)
		}
	}
	return out
}

var requestLine = regexp.MustCompile(`^([A-Z]+) sip:\S+ SIP/2\.0$`)

// sippReceived reads a sipp -message_file: the messages it received, each as its trimmed lines.
func sippReceived(t *testing.T, msgLog string) [][]string {
	t.Helper()
	data, err := os.ReadFile(msgLog)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	var out [][]string
	for _, block := range strings.Split(string(data), "----------------------------------------------- ") {
		if !strings.Contains(block, "message received") {
			continue
		}
		lines := strings.Split(block, "\n")
		for i := range lines {
			lines[i] = strings.TrimSpace(lines[i])
		}
		out = append(out, lines)
	}
	return out
}

// count returns how many requests of this method the backend received.
func count(reqs []string, method string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, method+" ") {
			n++
		}
	}
	return n
}

// uacResult is what a caller sipp run reported.
type uacResult struct {
	ok, failed int
	rc         int
	out        string
	msgLog     string // sipp's -message_file, when the run traced messages
}

// runUAC runs a bounded sipp caller against the gateway.
func runUAC(t *testing.T, scenPath string, gwPort, calls int, rate int, extra ...string) uacResult {
	t.Helper()
	return runSippUAC(t, scenPath, "127.0.0.1", fmt.Sprintf("127.0.0.1:%d", gwPort), calls, rate, extra...)
}

// runUAC6 runs a bounded sipp caller to the gateway over IPv6 loopback.
func runUAC6(t *testing.T, gwPort, calls int) uacResult {
	t.Helper()
	return runSippUAC(t, scenario("uac-invite.xml"), "::1", fmt.Sprintf("[::1]:%d", gwPort), calls, calls)
}

func runSippUAC(t *testing.T, scenPath, localIP, target string, calls int, rate int, extra ...string) uacResult {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-sf", scenPath, "-i", localIP, "-p", strconv.Itoa(freePort(t)), "-s", "1000",
		"-nostdin", "-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate), "-d", "50",
		"-timeout", "30", "-timeout_error", "-trace_stat", "-stf", filepath.Join(dir, "stat.csv"),
		"-trace_err", "-error_file", filepath.Join(dir, "err.log")}
	args = append(args, extra...)
	args = append(args, target)
	return sippRun(t, dir, args)
}

// sippRun runs a bounded sipp UAC in dir (its -stf and -error_file point there) and reads its
// counts.
func sippRun(t *testing.T, dir string, args []string) uacResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", args...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	res := uacResult{rc: cmd.ProcessState.ExitCode(), out: string(out)}
	res.ok = statCol(t, filepath.Join(dir, "stat.csv"), "SuccessfulCall(C)")
	res.failed = statCol(t, filepath.Join(dir, "stat.csv"), "FailedCall(C)")
	if errs, err := os.ReadFile(filepath.Join(dir, "err.log")); err == nil && len(errs) > 0 {
		res.out += "\n--- sipp errors ---\n" + tail(string(errs), 3000)
	}
	return res
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// statCol reads a cumulative counter from the last row of a sipp -trace_stat CSV.
func statCol(t *testing.T, path, col string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 {
		return -1
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	for i, h := range head {
		if h == col && i < len(last) {
			n, err := strconv.Atoi(strings.TrimSpace(last[i]))
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// templated writes a scenario with @KEY@ placeholders filled in and returns its path.
func templated(t *testing.T, name string, vals map[string]string) string {
	t.Helper()
	data, err := os.ReadFile(scenario(name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for k, v := range vals {
		s = strings.ReplaceAll(s, "@"+k+"@", v)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not true within %v", what, within)
	return 0
}

// lockedWriter lets the gateway's goroutines share one log buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// String is safe while sipgo's per-message goroutines, which can outlive Stop, still log.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
