package test

// A harness that runs baresip 1.0.0 (Debian baresip-core) headless as a real SIP user agent in
// tests. Each instance gets its own config dir, loopback IP, SIP port (TLS on SIP port + 1),
// ctrl_tcp port and a small RTP port range, so several can run at once. Tests drive it over
// ctrl_tcp (netstring-framed JSON) and wait for the events it reports on the same socket.
//
// The account is created with the "uanew" command after the control socket is connected, so
// no registration event can fire before the harness listens.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// baresipOpts describes one baresip instance.
type baresipOpts struct {
	User     string // AOR user part (default "alice")
	Password string // digest password (auth_pass); empty means none
	AuthUser string // digest user name if it differs from User
	// Domain is the AOR host[:port]. With Register it is the registrar (REGISTER goes there).
	// Default: ListenIP (a local AOR, fine for dial-only use).
	Domain    string
	Transport string // "udp" (default), "tcp" or "tls": the AOR's transport (REGISTER, Contact)
	Register  bool   // regint > 0; otherwise regint=0 and baresip never REGISTERs
	RegInt    int    // registration interval in seconds when Register (default 600)
	// Outbound sends every request (REGISTER and calls) through sip:Domain;transport=Transport,
	// so a plain dial("sip:bob@example") goes to the gateway.
	Outbound   bool
	ListenIP   string // local IP baresip binds for SIP, RTP and ctrl_tcp (default 127.0.0.1)
	AutoAnswer bool   // answermode=auto; otherwise manual (CALL_INCOMING, then answer())
	// CertFile is sip_certificate (cert+key in one PEM) for the TLS server role (TLS listens on
	// SIPPort+1). Empty: a self-signed cert for ListenIP is generated, because without one
	// baresip's TLS listener fails every handshake, so a peer that opens a new TLS connection
	// to the Contact (e.g. a BYE) cannot reach it. NoCert leaves sip_certificate out.
	CertFile  string
	NoCert    bool
	CAFile    string // sip_cafile (see TestBaresipTLSClientRegister for what it changes)
	DNSServer string // dns_server host:port (see baresipStartDNS); default: /etc/resolv.conf
	ToneHz    int    // ausine frequency (default 440)
	Extra     string // extra account parameters, e.g. ";mediaenc=dtls_srtp;medianat=ice"
	Verbose   bool   // pass -v
	NoTrace   bool   // do not pass -s (SIP trace in the log)
}

// baresipEvent is one event baresip reported on ctrl_tcp.
type baresipEvent struct {
	Type       string `json:"type"`  // REGISTERING, REGISTER_OK, REGISTER_FAIL, CALL_INCOMING, ...
	Class      string `json:"class"` // "register", "call", ...
	AccountAOR string `json:"accountaor"`
	Direction  string `json:"direction"` // "incoming" / "outgoing" for call events
	PeerURI    string `json:"peeruri"`
	PeerName   string `json:"peerdisplayname"`
	ID         string `json:"id"` // call id (the SIP Call-ID) for call events
	Param      string `json:"param"`
	At         time.Time
	Raw        string
	used       bool
}

// baresipUA is a running baresip instance started by this test.
type baresipUA struct {
	opts     baresipOpts
	IP       string
	SIPPort  int // UDP and TCP; TLS listens on SIPPort+1
	CtrlPort int
	RTPLow   int
	RTPHigh  int
	AOR      string // "sip:user@domain"
	Dir      string

	cmd  *exec.Cmd
	log  *lockedWriter
	done chan struct{} // closed when the process has exited
	exit error

	conn    net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	cond    *sync.Cond
	events  []*baresipEvent
	pending map[string]chan baresipReply
	readErr error
	token   atomic.Int64
	stopped atomic.Bool
}

type baresipReply struct {
	Response bool            `json:"response"`
	OK       bool            `json:"ok"`
	Data     json.RawMessage `json:"data"`
	Token    string          `json:"token"`
}

func baresipRequire(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("baresip"); err != nil {
		t.Fatal("baresip not found: install the Debian package baresip-core (apt-get install baresip-core)")
	}
	if _, err := os.Stat(baresipModulePath + "/ctrl_tcp.so"); err != nil {
		t.Fatalf("baresip modules missing: %v", err)
	}
}

const baresipModulePath = "/usr/lib/baresip/modules"

// baresipStart starts baresip with o and stops it (by PID) when the test ends. It returns once
// the control socket is connected and the account exists; with Register it does not wait for
// the registration (use registered).
func baresipStart(t *testing.T, o baresipOpts) *baresipUA {
	t.Helper()
	baresipRequire(t)
	if o.User == "" {
		o.User = "alice"
	}
	if o.ListenIP == "" {
		o.ListenIP = "127.0.0.1"
	}
	if o.Domain == "" {
		o.Domain = o.ListenIP
	}
	if o.Transport == "" {
		o.Transport = "udp"
	}
	if o.RegInt == 0 {
		o.RegInt = 600
	}
	if o.ToneHz == 0 {
		o.ToneHz = 440
	}
	if o.CertFile == "" && !o.NoCert {
		o.CertFile, _, _ = baresipSelfSigned(t, o.User+" baresip", o.ListenIP)
	}
	var lastErr error
	for attempt := range 3 {
		u, err := baresipTryStart(t, o)
		if err == nil {
			return u
		}
		lastErr = err
		t.Logf("baresip start attempt %d: %v", attempt+1, err)
	}
	t.Fatalf("baresip did not start: %v", lastErr)
	return nil
}

func baresipTryStart(t *testing.T, o baresipOpts) (*baresipUA, error) {
	u := &baresipUA{opts: o, IP: o.ListenIP, Dir: t.TempDir(), log: &lockedWriter{w: &bytes.Buffer{}},
		done: make(chan struct{}), pending: map[string]chan baresipReply{}}
	u.cond = sync.NewCond(&u.mu)
	u.SIPPort = baresipFreeSIPPort(t, u.IP)
	u.CtrlPort = baresipFreeTCPPort(t, u.IP)
	u.RTPLow, u.RTPHigh = baresipRTPRange(t, u.IP)
	u.AOR = "sip:" + o.User + "@" + o.Domain

	if err := os.WriteFile(filepath.Join(u.Dir, "config"), []byte(u.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"accounts", "contacts"} {
		if err := os.WriteFile(filepath.Join(u.Dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-f", u.Dir}
	if !o.NoTrace {
		args = append(args, "-s")
	}
	if o.Verbose {
		args = append(args, "-v")
	}
	u.cmd = exec.Command("baresip", args...)
	u.cmd.Dir = u.Dir
	u.cmd.Stdout, u.cmd.Stderr = u.log, u.log // stdin stays /dev/null
	if err := u.cmd.Start(); err != nil {
		t.Fatalf("start baresip: %v", err)
	}
	go func() {
		u.exit = u.cmd.Wait()
		close(u.done)
		u.mu.Lock()
		u.cond.Broadcast()
		u.mu.Unlock()
	}()
	// Registered before anything can fail, so the process is always stopped.
	t.Cleanup(func() {
		u.stop()
		if t.Failed() {
			t.Logf("baresip %s (pid %d, sip %s:%d, rtp %d-%d) events:\n%s\nlog tail:\n%s", u.AOR, u.cmd.Process.Pid,
				u.IP, u.SIPPort, u.RTPLow, u.RTPHigh, u.eventDump(), tail(u.log.String(), 12000))
		}
	})

	// Connect ctrl_tcp.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(u.IP, strconv.Itoa(u.CtrlPort)), time.Second)
		if err == nil {
			u.conn = c
			break
		}
		select {
		case <-u.done:
			u.stop()
			return nil, fmt.Errorf("baresip exited (%v) before ctrl_tcp was up; log:\n%s", u.exit, tail(u.log.String(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			u.stop()
			return nil, fmt.Errorf("ctrl_tcp %s:%d not reachable: %v", u.IP, u.CtrlPort, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	go u.readLoop()

	if _, err := u.command("uanew", u.accountLine()); err != nil {
		u.stop()
		return nil, fmt.Errorf("uanew: %v", err)
	}
	return u, nil
}

// config renders the baresip config file.
func (u *baresipUA) config() string {
	var b strings.Builder
	kv := func(k, v string) { fmt.Fprintf(&b, "%-20s %s\n", k, v) }
	kv("poll_method", "epoll")
	kv("sip_listen", net.JoinHostPort(u.IP, strconv.Itoa(u.SIPPort)))
	if u.opts.CertFile != "" {
		kv("sip_certificate", u.opts.CertFile)
	}
	if u.opts.CAFile != "" {
		kv("sip_cafile", u.opts.CAFile)
	}
	if u.opts.DNSServer != "" {
		kv("dns_server", u.opts.DNSServer)
	}
	kv("net_interface", u.IP) // SDP o=/c= and RTP use this address
	kv("call_local_timeout", "120")
	kv("call_max_calls", "4")
	kv("audio_source", "ausine,"+strconv.Itoa(u.opts.ToneHz))
	kv("ausrc_srate", "48000") // ausine only produces 48 kHz stereo
	kv("ausrc_channels", "2")
	kv("audio_buffer", "20-160")
	kv("rtp_tos", "0")
	kv("rtp_ports", fmt.Sprintf("%d-%d", u.RTPLow, u.RTPHigh))
	kv("rtcp_mux", "no")
	kv("jitter_buffer_delay", "5-10")
	kv("module_path", baresipModulePath)
	kv("module", "g711.so")
	kv("module", "ausine.so")
	if strings.Contains(u.opts.Extra, "opus") {
		kv("module", "opus.so")
	}
	if strings.Contains(u.opts.Extra, "srtp") {
		kv("module", "srtp.so")
		kv("module", "dtls_srtp.so")
	}
	if strings.Contains(u.opts.Extra, "ice") {
		kv("module", "ice.so")
	}
	kv("module_tmp", "account.so")
	kv("module_app", "menu.so")
	kv("module_app", "ctrl_tcp.so")
	kv("ctrl_tcp_listen", net.JoinHostPort(u.IP, strconv.Itoa(u.CtrlPort)))
	return b.String()
}

// accountLine renders the account (the argument of uanew, same syntax as the accounts file).
func (u *baresipUA) accountLine() string {
	o := u.opts
	var b strings.Builder
	fmt.Fprintf(&b, "<sip:%s@%s;transport=%s>", o.User, o.Domain, o.Transport)
	if o.AuthUser != "" {
		fmt.Fprintf(&b, ";auth_user=%s", o.AuthUser)
	}
	if o.Password != "" {
		fmt.Fprintf(&b, ";auth_pass=%s", o.Password)
	}
	if o.Outbound {
		fmt.Fprintf(&b, ";outbound=\"sip:%s;transport=%s;lr\"", o.Domain, o.Transport)
	}
	if o.Register {
		fmt.Fprintf(&b, ";regint=%d", o.RegInt)
	} else {
		b.WriteString(";regint=0")
	}
	if o.AutoAnswer {
		b.WriteString(";answermode=auto")
	} else {
		b.WriteString(";answermode=manual")
	}
	b.WriteString(";ptime=20")
	if !strings.Contains(o.Extra, "audio_codecs") {
		b.WriteString(";audio_codecs=PCMU,PCMA")
	}
	b.WriteString(o.Extra)
	return b.String()
}

// SIPAddr is where baresip takes SIP over UDP and TCP; TLSAddr over TLS.
func (u *baresipUA) SIPAddr() string { return net.JoinHostPort(u.IP, strconv.Itoa(u.SIPPort)) }
func (u *baresipUA) TLSAddr() string { return net.JoinHostPort(u.IP, strconv.Itoa(u.SIPPort+1)) }

// ContactURI is a URI that reaches this UA directly (for calls to it without a registrar).
func (u *baresipUA) ContactURI(transport string) string {
	if transport == "tls" {
		return fmt.Sprintf("sip:%s@%s;transport=tls", u.opts.User, u.TLSAddr())
	}
	if transport == "" {
		transport = "udp"
	}
	return fmt.Sprintf("sip:%s@%s;transport=%s", u.opts.User, u.SIPAddr(), transport)
}

// Log returns everything baresip printed so far (SIP trace unless NoTrace).
func (u *baresipUA) Log() string { return u.log.String() }

// Pid is the process id of this instance.
func (u *baresipUA) Pid() int { return u.cmd.Process.Pid }

func (u *baresipUA) readLoop() {
	r := bufio.NewReader(u.conn)
	for {
		msg, err := baresipReadNetstring(r)
		if err != nil {
			u.mu.Lock()
			u.readErr = err
			for tok, ch := range u.pending {
				close(ch)
				delete(u.pending, tok)
			}
			u.cond.Broadcast()
			u.mu.Unlock()
			return
		}
		var head struct {
			Event    bool `json:"event"`
			Response bool `json:"response"`
		}
		if err := json.Unmarshal(msg, &head); err != nil {
			fmt.Fprintf(u.log, "\n[harness] bad ctrl_tcp message %q: %v\n", msg, err)
			continue
		}
		switch {
		case head.Event:
			ev := &baresipEvent{At: time.Now(), Raw: string(msg)}
			_ = json.Unmarshal(msg, ev)
			u.mu.Lock()
			u.events = append(u.events, ev)
			u.cond.Broadcast()
			u.mu.Unlock()
		case head.Response:
			var rep baresipReply
			_ = json.Unmarshal(msg, &rep)
			u.mu.Lock()
			ch, ok := u.pending[rep.Token]
			if ok {
				delete(u.pending, rep.Token)
			}
			u.mu.Unlock()
			if ok {
				ch <- rep
			} else {
				fmt.Fprintf(u.log, "\n[harness] unmatched ctrl_tcp reply %s\n", msg)
			}
		}
	}
}

func baresipReadNetstring(r *bufio.Reader) ([]byte, error) {
	lenStr, err := r.ReadString(':')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(lenStr[:len(lenStr)-1]))
	if err != nil || n < 0 || n > 1<<24 {
		return nil, fmt.Errorf("bad netstring length %q", lenStr)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if buf[n] != ',' {
		return nil, fmt.Errorf("netstring not terminated by ','")
	}
	return buf[:n], nil
}

// command runs a baresip command (as typed after "/" in the menu: dial, hangup, accept,
// listcalls, reginfo, uanew, uadel, ...) and returns its text output. It fails when baresip
// answers ok=false or does not answer within 5 s.
func (u *baresipUA) command(cmd, params string) (string, error) {
	tok := strconv.FormatInt(u.token.Add(1), 10)
	body, _ := json.Marshal(map[string]string{"command": cmd, "params": params, "token": tok})
	ch := make(chan baresipReply, 1)
	u.mu.Lock()
	if u.readErr != nil {
		u.mu.Unlock()
		return "", fmt.Errorf("ctrl_tcp closed: %v", u.readErr)
	}
	u.pending[tok] = ch
	u.mu.Unlock()

	u.wmu.Lock()
	_ = u.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := fmt.Fprintf(u.conn, "%d:%s,", len(body), body)
	u.wmu.Unlock()
	if err != nil {
		return "", err
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return "", fmt.Errorf("%s: ctrl_tcp closed", cmd)
		}
		var data string
		if json.Unmarshal(rep.Data, &data) != nil {
			data = string(rep.Data)
		}
		if !rep.OK {
			return data, fmt.Errorf("%s %s: baresip said not ok: %s", cmd, params, data)
		}
		return data, nil
	case <-time.After(5 * time.Second):
		u.mu.Lock()
		delete(u.pending, tok)
		u.mu.Unlock()
		return "", fmt.Errorf("%s: no reply within 5s", cmd)
	}
}

// nextEvent returns the oldest event of type typ not yet returned, waiting up to within. It
// is safe from any goroutine (it never calls t.Fatal).
func (u *baresipUA) nextEvent(typ string, within time.Duration) (baresipEvent, error) {
	return u.nextEventOf([]string{typ}, within)
}

// nextEventOf is nextEvent for the oldest not yet returned event of any of the types.
func (u *baresipUA) nextEventOf(types []string, within time.Duration) (baresipEvent, error) {
	deadline := time.Now().Add(within)
	timer := time.AfterFunc(within, func() {
		u.mu.Lock()
		u.cond.Broadcast()
		u.mu.Unlock()
	})
	defer timer.Stop()
	u.mu.Lock()
	defer u.mu.Unlock()
	for {
		for _, ev := range u.events {
			if !ev.used && slices.Contains(types, ev.Type) {
				ev.used = true
				return *ev, nil
			}
		}
		if u.readErr != nil {
			return baresipEvent{}, fmt.Errorf("waiting for %v: ctrl_tcp closed: %v", types, u.readErr)
		}
		if !time.Now().Before(deadline) {
			return baresipEvent{}, fmt.Errorf("no %v event within %v", types, within)
		}
		u.cond.Wait()
	}
}

// waitEvent is nextEvent that fails the test. Call it from the test goroutine only.
func (u *baresipUA) waitEvent(t *testing.T, typ string, within time.Duration) baresipEvent {
	t.Helper()
	ev, err := u.nextEvent(typ, within)
	if err != nil {
		t.Fatalf("baresip %s: %v; events so far:\n%s", u.AOR, err, u.eventDump())
	}
	return ev
}

// events returns a copy of every event so far, in arrival order.
func (u *baresipUA) eventList() []baresipEvent {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]baresipEvent, len(u.events))
	for i, e := range u.events {
		out[i] = *e
	}
	return out
}

// eventTypes lists the types of all events so far, e.g. [REGISTERING REGISTER_OK].
func (u *baresipUA) eventTypes() []string {
	var out []string
	for _, e := range u.eventList() {
		out = append(out, e.Type)
	}
	return out
}

func (u *baresipUA) eventDump() string {
	var b strings.Builder
	for _, e := range u.eventList() {
		fmt.Fprintf(&b, "  %s %s\n", e.At.Format("15:04:05.000"), e.Raw)
	}
	return b.String()
}

// dial places a call; follow with waitEvent(CALL_ESTABLISHED) or CALL_CLOSED. baresip 1.0.0
// appends the account's ";transport=" to the dialled URI (a URI's own transport param comes
// first and wins), so a TLS account dials over TLS unless the URI says otherwise.
func (u *baresipUA) dial(uri string) error {
	_, err := u.command("dial", uri)
	return err
}

// hangup ends the current call (baresip 1.0.0 hangup takes no call id).
func (u *baresipUA) hangup() error {
	_, err := u.command("hangup", "")
	return err
}

// answer accepts the current incoming call (when AutoAnswer is off).
func (u *baresipUA) answer() error {
	_, err := u.command("accept", "")
	return err
}

// registered waits for REGISTER_OK and fails the test on REGISTER_FAIL or a timeout. Every
// refresh emits another REGISTER_OK; each call consumes one.
func (u *baresipUA) registered(t *testing.T, within time.Duration) baresipEvent {
	t.Helper()
	ev, err := u.nextEventOf([]string{"REGISTER_OK", "REGISTER_FAIL"}, within)
	if err != nil {
		t.Fatalf("baresip %s: not registered: %v; events:\n%s", u.AOR, err, u.eventDump())
	}
	if ev.Type == "REGISTER_FAIL" {
		t.Fatalf("baresip %s: registration failed: %s", u.AOR, ev.Param)
	}
	return ev
}

// stop ends the process by its PID: SIGTERM (baresip then un-REGISTERs, which can hang when the
// registrar is gone), a second SIGTERM after 2 s, SIGKILL after 5 s. Safe to call twice.
func (u *baresipUA) stop() {
	if !u.stopped.CompareAndSwap(false, true) {
		<-u.done
		return
	}
	if u.conn != nil {
		defer u.conn.Close()
	}
	select {
	case <-u.done:
		return
	default:
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.done:
		return
	case <-time.After(2 * time.Second):
	}
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-u.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = u.cmd.Process.Kill()
	<-u.done
}

// baresipFreeSIPPort returns a port p on ip with UDP p, TCP p and TCP p+1 (TLS) free.
func baresipFreeSIPPort(t *testing.T, ip string) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		ok := p < 65535
		if ok {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p+1)))
			ok = err == nil
			if ok {
				l2.Close()
			}
		}
		if ok {
			c, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
			ok = err == nil
			if ok {
				c.Close()
			}
		}
		l.Close()
		if ok {
			return p
		}
	}
	t.Fatal("no free SIP port pair")
	return 0
}

func baresipFreeTCPPort(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// baresipRTPSpan is the RTP range per instance: 10 RTP/RTCP pairs without rtcp_mux.
const baresipRTPSpan = 20

var baresipRTPNext atomic.Int64

// baresipRTPRange picks a range of free UDP ports below the Linux ephemeral range (32768+),
// walking from a per-process offset so parallel test binaries rarely collide.
func baresipRTPRange(t *testing.T, ip string) (int, int) {
	t.Helper()
	const lo, hi = 20000, 32000
	slots := (hi - lo) / baresipRTPSpan
	start := (os.Getpid() * 7919) % slots
	for range slots {
		slot := (start + int(baresipRTPNext.Add(1))) % slots
		base := lo + slot*baresipRTPSpan
		free := true
		for p := base; p < base+baresipRTPSpan && free; p++ {
			// A wildcard bind fails if any address holds the port, so this also sees
			// other loopback IPs' sockets.
			c, err := net.ListenPacket("udp", fmt.Sprintf("0.0.0.0:%d", p))
			if err != nil {
				free = false
				break
			}
			c.Close()
		}
		if free {
			return base, base + baresipRTPSpan - 1
		}
	}
	t.Fatal("no free RTP range")
	return 0, 0
}

// baresipSelfSigned writes a self-signed ECDSA cert for the names/IPs given and returns the
// paths of (cert+key in one PEM for baresip's sip_certificate, cert only) and the tls.Certificate.
func baresipSelfSigned(t *testing.T, cn string, hosts ...string) (combined, certOnly string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	dir := t.TempDir()
	combined = filepath.Join(dir, "cert+key.pem")
	certOnly = filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(combined, append(append([]byte{}, certPEM...), keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certOnly, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return combined, certOnly, cert
}

// ---------------------------------------------------------------------------------------------
// Tests proving the harness against real peers.

// TestBaresipHarnessCallsSipp: baresip (no registration) calls a sipp UAS, the call is
// established, baresip hangs up, and sipp saw INVITE, ACK and BYE.
func TestBaresipHarnessCallsSipp(t *testing.T) {
	requireSipp(t)
	start := time.Now()
	uasPort := freePort(t)
	uas := startUAS(t, "uas-rr.xml", uasPort)
	u := baresipStart(t, baresipOpts{User: "alice", ListenIP: "127.0.0.7"})
	t.Logf("started baresip in %v", time.Since(start))

	target := fmt.Sprintf("sip:service@127.0.0.1:%d", uasPort)
	if err := u.dial(target); err != nil {
		t.Fatal(err)
	}
	est := u.waitEvent(t, "CALL_ESTABLISHED", 10*time.Second)
	if est.Direction != "outgoing" || !strings.Contains(est.PeerURI, "service@127.0.0.1") {
		t.Errorf("CALL_ESTABLISHED = %+v", est)
	}
	out, err := u.command("listcalls", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "service@127.0.0.1") {
		t.Errorf("listcalls does not show the call: %q", out)
	}
	t.Logf("established after %v", time.Since(start))
	if err := u.hangup(); err != nil {
		t.Fatal(err)
	}
	closed := u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
	if closed.ID != est.ID {
		t.Errorf("closed call %q, established %q", closed.ID, est.ID)
	}
	eventually(t, 5*time.Second, "sipp saw the BYE", func() bool { return count(uas.received(t), "BYE") == 1 })
	reqs := uas.received(t)
	if count(reqs, "INVITE") != 1 || count(reqs, "ACK") != 1 || count(reqs, "BYE") != 1 {
		t.Errorf("sipp received %v", reqs)
	}
	// All requests belong to the one call baresip reported.
	for _, r := range reqs {
		if !strings.HasSuffix(r, " "+est.ID) {
			t.Errorf("request %q is not in call %q", r, est.ID)
		}
	}
	// The INVITE came from the chosen loopback IP, with SDP for that IP and an RTP port in range.
	msgs, _ := os.ReadFile(uas.msgLog)
	if !strings.Contains(string(msgs), "c=IN IP4 127.0.0.7") {
		t.Errorf("INVITE SDP does not use 127.0.0.7:\n%s", tail(string(msgs), 3000))
	}
	if port := baresipSDPPort(string(msgs)); port < u.RTPLow || port > u.RTPHigh {
		t.Errorf("SDP audio port %d outside %d-%d", port, u.RTPLow, u.RTPHigh)
	}
	t.Logf("events: %v; total %v", u.eventTypes(), time.Since(start))
}

func baresipSDPPort(msgs string) int {
	i := strings.Index(msgs, "m=audio ")
	if i < 0 {
		return -1
	}
	f := strings.Fields(msgs[i+len("m=audio "):])
	if len(f) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// TestBaresipHarnessRegistersWithDigest: baresip registers against a sipp registrar that
// challenges with 401 and verifies the digest (verifyauth); a wrong password gets 403.
func TestBaresipHarnessRegistersWithDigest(t *testing.T) {
	requireSipp(t)
	for _, tc := range []struct {
		name, password string
		wantOK         bool
	}{
		{"good-password", "s3cret", true},
		{"wrong-password", "wrong", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			port := freePort(t)
			scen := templated(t, "uas-register-auth.xml", map[string]string{"USER": "alice", "PASSWORD": "s3cret"})
			reg := baresipStartSippRegistrar(t, scen, port)
			u := baresipStart(t, baresipOpts{User: "alice", Password: tc.password, Domain: fmt.Sprintf("127.0.0.1:%d", port),
				Register: true, RegInt: 300, ListenIP: "127.0.0.8"})
			if tc.wantOK {
				ev := u.registered(t, 10*time.Second)
				if ev.Class != "register" || ev.AccountAOR != u.AOR {
					t.Errorf("REGISTER_OK = %+v", ev)
				}
				out, err := u.command("reginfo", "")
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("reginfo: %q", out)
				if !strings.Contains(out, "OK") {
					t.Errorf("reginfo does not say OK: %q", out)
				}
			} else {
				ev := u.waitEvent(t, "REGISTER_FAIL", 10*time.Second)
				if !strings.Contains(ev.Param, "403") {
					t.Errorf("REGISTER_FAIL param %q, want the 403", ev.Param)
				}
			}
			reqs := reg.received(t)
			if count(reqs, "REGISTER") != 2 {
				t.Errorf("registrar received %v, want 2 REGISTERs (plain, then with Authorization)", reqs)
			}
			msgs, _ := os.ReadFile(reg.msgLog)
			if !strings.Contains(string(msgs), "Authorization: Digest") || !regexp.MustCompile(`Contact: <sip:alice-\w+@127\.0\.0\.8:\d+>`).MatchString(string(msgs)) {
				t.Errorf("no Authorization / Contact from 127.0.0.8 in:\n%s", tail(string(msgs), 3000))
			}
			// sipp reports the verifyauth outcome as its exit: 200 sent means authvalid.
			sent200 := strings.Contains(string(msgs), "SIP/2.0 200 OK")
			if sent200 != tc.wantOK {
				t.Errorf("sipp sent 200: %v, want %v", sent200, tc.wantOK)
			}
			t.Logf("events %v in %v", u.eventTypes(), time.Since(start))
		})
	}
}

// baresipStartSippRegistrar runs sipp as a registrar with the given scenario path. It does not
// use sippProc.stop, which reads cmd.ProcessState while the Wait goroutine may write it (a data
// race when sipp has already exited).
func baresipStartSippRegistrar(t *testing.T, scenPath string, port int) *sippProc {
	t.Helper()
	dir := t.TempDir()
	p := &sippProc{msgLog: filepath.Join(dir, "messages.log"), out: &bytes.Buffer{}}
	p.cmd = exec.Command("sipp", "-sf", scenPath, "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-nostdin", "-trace_msg", "-message_file", p.msgLog, "-trace_err", "-error_file", filepath.Join(dir, "err.log"))
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sipp: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = p.cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			errs, _ := os.ReadFile(filepath.Join(dir, "err.log"))
			t.Logf("sipp registrar output:\n%s\nerrors:\n%s", tail(p.out.String(), 2000), tail(string(errs), 3000))
		}
	})
	waitUDP(t, port)
	return p
}

// baresipStartDNS runs a tiny UDP DNS server that answers every A query with 127.0.0.1 (and
// everything else with an empty NOERROR), for baresipOpts.DNSServer: baresip 1.0.0 resolves
// host names only through DNS (it ignores /etc/hosts), so this is how a test makes it use a
// host name such as "gw.test" (needed for SNI). It returns the server's address.
func baresipStartDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if len(q) < 12 {
				continue
			}
			// End of the first question: labels, then qtype and qclass.
			i := 12
			for i < len(q) && q[i] != 0 {
				i += int(q[i]) + 1
			}
			if i+5 > len(q) {
				continue
			}
			qtype := int(q[i+1])<<8 | int(q[i+2])
			qend := i + 5
			resp := make([]byte, 0, qend+16)
			resp = append(resp, q[0], q[1], 0x80|q[2]&0x79, 0x80, 0, 1)
			if qtype == 1 {
				resp = append(resp, 0, 1, 0, 0, 0, 0)
			} else {
				resp = append(resp, 0, 0, 0, 0, 0, 0)
			}
			resp = append(resp, q[12:qend]...)
			if qtype == 1 {
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// baresipTLSProbe is a minimal TLS registrar: it records the handshake and the request line of
// every message, and answers each REGISTER with 200 OK (no auth), so the UA reports REGISTER_OK
// and its un-REGISTER at shutdown is answered too.
type baresipTLSProbe struct {
	ln     net.Listener
	mu     sync.Mutex
	sni    []string
	vers   []uint16
	heads  []string
	hsErrs []string
}

func baresipStartTLSProbe(t *testing.T, cert tls.Certificate) *baresipTLSProbe {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	p := &baresipTLSProbe{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c.(*tls.Conn))
			}()
		}
	}()
	return p
}

func (p *baresipTLSProbe) serve(c *tls.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		p.mu.Lock()
		p.hsErrs = append(p.hsErrs, err.Error())
		p.mu.Unlock()
		return
	}
	st := c.ConnectionState()
	p.mu.Lock()
	p.sni = append(p.sni, st.ServerName)
	p.vers = append(p.vers, st.Version)
	p.mu.Unlock()
	r := bufio.NewReader(c)
	for {
		var lines []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimRight(l, "\r\n")
			if l == "" {
				if len(lines) == 0 {
					continue // keep-alive CRLF
				}
				break
			}
			lines = append(lines, l)
		}
		p.mu.Lock()
		p.heads = append(p.heads, lines[0])
		p.mu.Unlock()
		var resp strings.Builder
		resp.WriteString("SIP/2.0 200 OK\r\n")
		clen := 0
		for _, l := range lines[1:] {
			name, val, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "via", "v", "from", "f", "call-id", "i", "cseq", "contact", "m":
				resp.WriteString(l + "\r\n")
			case "to", "t":
				resp.WriteString(l + ";tag=probe\r\n")
			case "content-length", "l":
				clen, _ = strconv.Atoi(strings.TrimSpace(val))
			}
		}
		if clen > 0 {
			if _, err := io.CopyN(io.Discard, r, int64(clen)); err != nil {
				return
			}
		}
		if !strings.HasPrefix(lines[0], "REGISTER ") {
			continue
		}
		resp.WriteString("Content-Length: 0\r\n\r\n")
		if _, err := io.WriteString(c, resp.String()); err != nil {
			return
		}
	}
}

func (p *baresipTLSProbe) snapshot() (heads, sni, hsErrs []string, vers []uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.heads...), append([]string(nil), p.sni...), append([]string(nil), p.hsErrs...),
		append([]uint16(nil), p.vers...)
}

// TestBaresipTLSClientRegister records how baresip 1.0.0 registers over TLS to a server with a
// self-signed certificate: the account line `<sip:alice@HOST:PORT;transport=tls>;...;regint=N`
// is all it takes. The client does not verify the server certificate, with or without
// sip_cafile (even an unrelated CA file), and sends no SNI, even for a host name.
func TestBaresipTLSClientRegister(t *testing.T) {
	_, _, serverCert := baresipSelfSigned(t, "gw.test", "gw.test", "127.0.0.1")
	_, otherCA, _ := baresipSelfSigned(t, "unrelated CA", "other.test")
	serverCertFile := filepath.Join(t.TempDir(), "server.pem")
	if err := os.WriteFile(serverCertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverCert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	dns := baresipStartDNS(t)
	for _, tc := range []struct {
		name, cafile, host string
	}{
		{"no-cafile", "", "127.0.0.1"},
		{"cafile-unrelated", otherCA, "127.0.0.1"},
		{"cafile-server-cert", serverCertFile, "127.0.0.1"},
		{"hostname-no-cafile", "", "gw.test"},
		{"hostname-cafile-unrelated", otherCA, "gw.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probe := baresipStartTLSProbe(t, serverCert)
			port := probe.ln.Addr().(*net.TCPAddr).Port
			start := time.Now()
			u := baresipStart(t, baresipOpts{User: "alice", Password: "s3cret", Domain: fmt.Sprintf("%s:%d", tc.host, port),
				Transport: "tls", Register: true, RegInt: 300, ListenIP: "127.0.0.9", CAFile: tc.cafile, NoCert: true, DNSServer: dns})
			ev, err := u.nextEvent("REGISTER_OK", 5*time.Second)
			heads, sni, hsErrs, vers := probe.snapshot()
			t.Logf("%s: requests %q, SNI %q, TLS versions %x, handshake errors %q, after %v; events %v", tc.name, heads, sni,
				vers, hsErrs, time.Since(start), u.eventTypes())
			if err != nil {
				t.Fatalf("no REGISTER_OK over TLS: %v", err)
			}
			if ev.AccountAOR != u.AOR || len(heads) == 0 || !strings.HasPrefix(heads[0], "REGISTER sip:"+tc.host) {
				t.Errorf("REGISTER_OK %+v, requests %q", ev, heads)
			}
			// baresip 1.0.0 sends no SNI, not even for a host name: a TLS server in front of it
			// needs a default certificate for ClientHellos without server_name.
			if len(sni) == 0 || sni[0] != "" {
				t.Errorf("SNI %q: baresip 1.0.0 was expected to send none", sni)
			}
		})
	}
}

// TestBaresipHarnessCallsBaresip: two instances on different loopback IPs call each other
// over UDP and TLS (the callee has sip_certificate); both see the call established and RTP.
func TestBaresipHarnessCallsBaresip(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			start := time.Now()
			bob := baresipStart(t, baresipOpts{User: "bob", ListenIP: "127.0.0.11", ToneHz: 880})
			alice := baresipStart(t, baresipOpts{User: "alice", ListenIP: "127.0.0.10"})
			if err := alice.dial(bob.ContactURI(transport)); err != nil {
				t.Fatal(err)
			}
			in := bob.waitEvent(t, "CALL_INCOMING", 5*time.Second)
			if !strings.Contains(in.PeerURI, "alice@127.0.0.10") {
				t.Errorf("CALL_INCOMING from %q", in.PeerURI)
			}
			if err := bob.answer(); err != nil {
				t.Fatal(err)
			}
			a := alice.waitEvent(t, "CALL_ESTABLISHED", 5*time.Second)
			b := bob.waitEvent(t, "CALL_ESTABLISHED", 5*time.Second)
			if a.ID != b.ID || b.Direction != "incoming" {
				t.Errorf("alice %+v, bob %+v", a, b)
			}
			alice.waitEvent(t, "CALL_RTPESTAB", 5*time.Second)
			bob.waitEvent(t, "CALL_RTPESTAB", 5*time.Second)
			if err := bob.hangup(); err != nil {
				t.Fatal(err)
			}
			alice.waitEvent(t, "CALL_CLOSED", 5*time.Second)
			bob.waitEvent(t, "CALL_CLOSED", 5*time.Second)
			t.Logf("%s: alice %v, bob %v in %v", transport, alice.eventTypes(), bob.eventTypes(), time.Since(start))
		})
	}
}

// TestBaresipHarnessAnswersSipp: a sipp caller reaches an auto-answering baresip directly by
// its AOR user, and the harness sees the call come and go. An R-URI with another user gets 404.
func TestBaresipHarnessAnswersSipp(t *testing.T) {
	requireSipp(t)
	u := baresipStart(t, baresipOpts{User: "agent7", ListenIP: "127.0.0.12", AutoAnswer: true})
	start := time.Now()
	res := runSippUAC(t, scenario("uac-invite.xml"), "127.0.0.1", u.SIPAddr(), 1, 1, "-s", "agent7")
	if res.ok != 1 || res.failed != 0 {
		t.Fatalf("sipp call: ok=%d failed=%d\n%s", res.ok, res.failed, tail(res.out, 2000))
	}
	// With answermode=auto baresip 1.0.0 emits no CALL_INCOMING, only ESTABLISHED.
	est := u.waitEvent(t, "CALL_ESTABLISHED", 2*time.Second)
	cl := u.waitEvent(t, "CALL_CLOSED", 2*time.Second)
	if est.Direction != "incoming" || !strings.Contains(est.PeerURI, "sipp@127.0.0.1") || cl.ID != est.ID {
		t.Errorf("established %+v, closed %+v", est, cl)
	}
	t.Logf("answered call in %v; events %v", time.Since(start), u.eventTypes())

	res = runSippUAC(t, scenario("uac-invite.xml"), "127.0.0.1", u.SIPAddr(), 1, 1, "-s", "somebody-else")
	if res.ok != 0 || res.failed != 1 || !strings.Contains(res.out, "SIP/2.0 404 Not Found") {
		t.Errorf("call to another user: ok=%d failed=%d, want a 404\n%s", res.ok, res.failed, tail(res.out, 2000))
	}
	if n := len(u.eventList()); n != 4 {
		t.Errorf("events after the 404: %v", u.eventTypes())
	}
}

// TestBaresipHarnessOutboundProxy: with Outbound, a dial to any URI is sent to Domain (the
// future gateway), here a sipp UAS.
func TestBaresipHarnessOutboundProxy(t *testing.T) {
	requireSipp(t)
	uasPort := freePort(t)
	uas := startUAS(t, "uas-rr.xml", uasPort)
	u := baresipStart(t, baresipOpts{User: "alice", Domain: fmt.Sprintf("127.0.0.1:%d", uasPort), Outbound: true,
		ListenIP: "127.0.0.13"})
	if err := u.dial("sip:queue-sales@callcenter.invalid"); err != nil {
		t.Fatal(err)
	}
	est := u.waitEvent(t, "CALL_ESTABLISHED", 5*time.Second)
	if err := u.hangup(); err != nil {
		t.Fatal(err)
	}
	u.waitEvent(t, "CALL_CLOSED", 5*time.Second)
	eventually(t, 5*time.Second, "sipp saw the BYE", func() bool { return count(uas.received(t), "BYE") == 1 })
	msgs, _ := os.ReadFile(uas.msgLog)
	if !strings.Contains(string(msgs), "INVITE sip:queue-sales@callcenter.invalid") {
		t.Errorf("INVITE not sent to the outbound proxy with the dialled R-URI:\n%s", tail(string(msgs), 3000))
	}
	t.Logf("established %s; events %v", est.ID, u.eventTypes())
}
