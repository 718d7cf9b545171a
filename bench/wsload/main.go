// Command wsload is the load client of the WebSocket agents benchmark (bench/ws-bench.sh):
// N browser-like agents over WSS (TLS, subprotocol "sip", a bearer JWT each) register as in
// RFC 7118 and stay idle, answering pings and OPTIONS. It measures the time to bring all N up,
// the gateway's memory per registered agent (VmRSS of its PID, Go heap from /metrics), and a
// reconnect storm: all N sockets closed at once, then reconnected and re-registered as fast as
// possible. Any failed registration makes it exit 1.
//
//	wsload -gen DIR                   write DIR/cert.pem, DIR/key.pem (127.0.0.1) and DIR/jwt.secret
//	wsload -url wss://127.0.0.1:19080/ws -ca DIR/cert.pem -secret DIR/jwt.secret -pid PID ...
//
// Every phase is bounded in count (N agents, one attempt each) and time (-timeout per agent,
// -deadline for the whole run).
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

type options struct {
	url, ca, secret, iss, aud, prefix, domain string
	src                                       string
	srcCount                                  int
	n, conc, stormConc                        int
	timeout, settle, idle, deadline           time.Duration
	pid                                       int
	metricsURL, gcURL, out                    string
	expires                                   int
}

func main() {
	var o options
	gen := flag.String("gen", "", "write a self-signed certificate for 127.0.0.1 (cert.pem, key.pem) and an HS256 secret (jwt.secret) into this directory, then exit")
	flag.StringVar(&o.url, "url", "wss://127.0.0.1:19080/ws", "the gateway's WebSocket endpoint")
	flag.StringVar(&o.ca, "ca", "", "PEM certificate(s) to trust for the gateway (empty: system roots)")
	flag.StringVar(&o.secret, "secret", "", "file holding the gateway's HS256 secret (http.jwt.secret_file); one trailing newline is trimmed")
	flag.StringVar(&o.iss, "iss", "dualgate", "token issuer (http.jwt.issuer)")
	flag.StringVar(&o.aud, "aud", "dualgate", "token audience (http.jwt.audience)")
	flag.StringVar(&o.prefix, "prefix", "a", "agent user names are prefix + 7 digits (a0000001..)")
	flag.StringVar(&o.domain, "domain", "127.0.0.1", "SIP domain of the AORs and the REGISTER's Request-URI")
	flag.StringVar(&o.src, "src", "127.0.1.1", "first loopback source address; agent i connects from src + i mod src-count")
	flag.IntVar(&o.srcCount, "src-count", 200, "number of consecutive source addresses (the gateway's limits are per client IP)")
	flag.IntVar(&o.n, "n", 10000, "agents")
	flag.IntVar(&o.conc, "conc", 200, "agents connecting at once in the initial fill")
	flag.IntVar(&o.stormConc, "storm-conc", 0, "agents reconnecting at once in the storm (0: all N)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on one agent's connect + register")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "pause after a phase before memory is sampled")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "idle time with every agent registered before the storm (keepalives flow); at least the gateway's ping_interval to see its pings")
	flag.DurationVar(&o.deadline, "deadline", 240*time.Second, "bound on the whole run")
	flag.IntVar(&o.pid, "pid", 0, "the gateway's PID, for VmRSS (0: no memory figures)")
	flag.StringVar(&o.metricsURL, "metrics", "", "the gateway's /metrics URL (Go heap, sockets, registrations); empty: none")
	flag.StringVar(&o.gcURL, "gc", "", "pprof heap URL of the gateway, fetched with gc=1 before each memory sample (forces a GC; the profiles are kept in -out)")
	flag.StringVar(&o.out, "out", ".", "directory for heap profiles and the latency files")
	flag.IntVar(&o.expires, "expires", 600, "Expires of the REGISTERs, seconds")
	flag.Parse()
	if *gen != "" {
		if err := generate(*gen); err != nil {
			fmt.Fprintln(os.Stderr, "wsload:", err)
			os.Exit(2)
		}
		return
	}
	ok, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// ---------------------------------------------------------------- setup files

func generate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	secret := make([]byte, 48)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	files := map[string][]byte{
		"cert.pem":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		"jwt.secret": []byte(base64.StdEncoding.EncodeToString(secret) + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------- agents

type agent struct {
	user   string
	src    netip.Addr
	token  string
	callID string
	tag    string
	host   string // the Contact's .invalid host, kept across reconnects as JsSIP does
	cseq   int

	mu sync.Mutex
	ws *websocket.Conn
}

type result struct {
	total, reg time.Duration // dial start → 200; REGISTER sent → 200
	err        error
}

// counters of the idle life of the sockets
type stats struct {
	pings, options, dropped atomic.Int64
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

type client struct {
	o      options
	dialer websocket.Dialer
	origin string
	st     stats
}

func newClient(o options) (*client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.ca != "" {
		pemBytes, err := os.ReadFile(o.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s: no certificate", o.ca)
		}
		tc.RootCAs = pool
	}
	u := strings.TrimPrefix(strings.TrimPrefix(o.url, "wss://"), "ws://")
	host, _, _ := strings.Cut(u, "/")
	scheme := "https"
	if strings.HasPrefix(o.url, "ws://") {
		scheme = "http"
	}
	c := &client{o: o, origin: scheme + "://" + host}
	c.dialer = websocket.Dialer{
		TLSClientConfig:  tc,
		Subprotocols:     []string{"sip"},
		HandshakeTimeout: o.timeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}
	return c, nil
}

// connect opens a's socket from its source address, sends the REGISTER and waits for its 200.
// On success the socket stays open with a reader answering pings and OPTIONS.
func (c *client) connect(ctx context.Context, a *agent) result {
	ctx, cancel := context.WithTimeout(ctx, c.o.timeout)
	defer cancel()
	start := time.Now()
	d := c.dialer
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: a.src.AsSlice()}, Timeout: c.o.timeout}
	d.NetDialContext = nd.DialContext
	h := http.Header{"Authorization": {"Bearer " + a.token}, "Origin": {c.origin}}
	ws, resp, err := d.DialContext(ctx, c.o.url, h)
	if err != nil {
		if resp != nil {
			return result{err: fmt.Errorf("upgrade: HTTP %d", resp.StatusCode)}
		}
		return result{err: fmt.Errorf("dial: %w", err)}
	}
	if ws.Subprotocol() != "sip" {
		ws.Close()
		return result{err: errors.New("upgrade: no sip subprotocol")}
	}
	a.cseq++
	branch := "z9hG4bK" + randHex(8)
	reg := fmt.Sprintf("REGISTER sip:%[1]s SIP/2.0\r\n"+
		"Via: SIP/2.0/WSS %[2]s.invalid;branch=%[3]s\r\n"+
		"Max-Forwards: 69\r\n"+
		"To: <sip:%[4]s@%[1]s>\r\n"+
		"From: <sip:%[4]s@%[1]s>;tag=%[5]s\r\n"+
		"Call-ID: %[6]s\r\n"+
		"CSeq: %[7]d REGISTER\r\n"+
		"Contact: <sip:%[8]s@%[2]s.invalid;transport=ws>;expires=%[9]d\r\n"+
		"Expires: %[9]d\r\n"+
		"Allow: INVITE,ACK,CANCEL,BYE,OPTIONS\r\n"+
		"Supported: path,outbound,gruu\r\n"+
		"User-Agent: dualgate-wsload\r\n"+
		"Content-Length: 0\r\n\r\n",
		c.o.domain, a.host, branch, a.user, a.tag, a.callID, a.cseq, randHex(4), c.o.expires)
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(dl)
		_ = ws.SetWriteDeadline(dl)
	}
	sent := time.Now()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(reg)); err != nil {
		ws.Close()
		return result{err: fmt.Errorf("send REGISTER: %w", err)}
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return result{err: fmt.Errorf("waiting for 200: %w", err)}
		}
		code, isResp := status(data)
		if !isResp {
			c.answer(ws, data)
			continue
		}
		if header(data, "Call-ID") != a.callID || header(data, "CSeq") != strconv.Itoa(a.cseq)+" REGISTER" {
			continue
		}
		if code < 200 {
			continue
		}
		if code != 200 {
			ws.Close()
			return result{err: fmt.Errorf("REGISTER answered %d", code)}
		}
		break
	}
	done := time.Now()
	_ = ws.SetReadDeadline(time.Time{})
	_ = ws.SetWriteDeadline(time.Time{})
	a.mu.Lock()
	a.ws = ws
	a.mu.Unlock()
	go c.idle(a, ws)
	return result{total: done.Sub(start), reg: done.Sub(sent)}
}

// idle reads the socket until it closes: pings are answered by pongs, OPTIONS by 200.
func (c *client) idle(a *agent, ws *websocket.Conn) {
	ws.SetPingHandler(func(data string) error {
		c.st.pings.Add(1)
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			a.mu.Lock()
			mine := a.ws == ws // closeAll sets a.ws to nil under the lock before we get here
			a.mu.Unlock()
			if mine {
				c.st.dropped.Add(1)
				fmt.Fprintf(os.Stderr, "agent %s: socket lost while idle: %v\n", a.user, err)
			}
			return
		}
		if _, isResp := status(data); !isResp {
			a.mu.Lock()
			c.answer(ws, data)
			a.mu.Unlock()
		}
	}
}

// answer replies 200 to OPTIONS (the gateway's or anyone's keepalive) and 405 to anything else.
func (c *client) answer(ws *websocket.Conn, req []byte) {
	line, _, _ := strings.Cut(string(req), "\r\n")
	method, _, _ := strings.Cut(line, " ")
	code, reason := 405, "Method Not Allowed"
	if method == "OPTIONS" {
		c.st.options.Add(1)
		code, reason = 200, "OK"
	}
	if method == "ACK" {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		for _, v := range headers(req, name) {
			if name == "To" && !strings.Contains(v, ";tag=") {
				v += ";tag=" + randHex(4)
			}
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = ws.WriteMessage(websocket.TextMessage, []byte(b.String()))
}

func status(msg []byte) (int, bool) {
	if !strings.HasPrefix(string(msg[:min(len(msg), 8)]), "SIP/2.0 ") || len(msg) < 11 {
		return 0, false
	}
	code, err := strconv.Atoi(string(msg[8:11]))
	return code, err == nil
}

// headers returns the values of a header (long name only; the gateway writes long names).
func headers(msg []byte, name string) []string {
	head, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	var out []string
	for _, line := range strings.Split(head, "\r\n")[1:] {
		n, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(n), name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

func header(msg []byte, name string) string {
	if hs := headers(msg, name); len(hs) > 0 {
		return hs[0]
	}
	return ""
}

// phase connects the agents with at most conc at once and returns one result per agent.
func (c *client) phase(ctx context.Context, agents []*agent, conc int) []result {
	res := make([]result, len(agents))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(conc, len(agents)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(agents) {
					return
				}
				if ctx.Err() != nil {
					res[i] = result{err: ctx.Err()}
					continue
				}
				res[i] = c.connect(ctx, agents[i])
			}
		})
	}
	wg.Wait()
	return res
}

// closeAll closes every socket at once (TCP FIN, no WebSocket close handshake: a network
// blip or a browser reload looks like this to the gateway).
func (c *client) closeAll(agents []*agent) {
	var wg sync.WaitGroup
	for part := range slices.Chunk(agents, max(len(agents)/16, 1)) {
		wg.Go(func() {
			for _, a := range part {
				a.mu.Lock()
				if a.ws != nil {
					_ = a.ws.NetConn().Close()
					a.ws = nil
				}
				a.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// ---------------------------------------------------------------- figures

type summary struct {
	ok, failed int
	wall       time.Duration
	p50, p99   time.Duration // dial → 200
	r50, r99   time.Duration // REGISTER → 200
	max        time.Duration
	reasons    map[string]int
}

func summarize(res []result, wall time.Duration) summary {
	s := summary{wall: wall, reasons: map[string]int{}}
	var tot, reg []time.Duration
	for _, r := range res {
		if r.err != nil {
			s.failed++
			s.reasons[reasonOf(r.err)]++
			continue
		}
		s.ok++
		tot = append(tot, r.total)
		reg = append(reg, r.reg)
	}
	s.p50, s.p99, s.max = pct(tot, 0.50), pct(tot, 0.99), pct(tot, 1)
	s.r50, s.r99 = pct(reg, 0.50), pct(reg, 0.99)
	return s
}

// reasonOf names a failure by kind, without the addresses that make every message unique.
func reasonOf(err error) string {
	e := err.Error()
	phase := "dial"
	for _, p := range []string{"upgrade", "send REGISTER", "waiting for 200", "REGISTER answered"} {
		if strings.HasPrefix(e, p) {
			phase = p
		}
	}
	if m := httpStatus.FindString(e); m != "" {
		return phase + ":" + m
	}
	for _, k := range []string{"broken pipe", "connection reset", "connection refused", "i/o timeout", "deadline exceeded", "EOF", "bad handshake"} {
		if strings.Contains(e, k) {
			return phase + ":" + k
		}
	}
	if _, code, ok := strings.Cut(e, "REGISTER answered "); ok {
		return "REGISTER:" + code
	}
	return phase + ":other"
}

var httpStatus = regexp.MustCompile(`HTTP [0-9]{3}`)

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d))*q+0.5) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func (s summary) line(name string) string {
	var rs []string
	for k, v := range s.reasons {
		rs = append(rs, fmt.Sprintf("%s:%d", strings.ReplaceAll(k, " ", "_"), v))
	}
	sort.Strings(rs)
	reasons := "none"
	if len(rs) > 0 {
		reasons = strings.Join(rs, ",")
	}
	return fmt.Sprintf("%s ok=%d failed=%d wall_s=%.2f rate_per_s=%.0f connect_reg_ms p50=%s p99=%s max=%s register_ms p50=%s p99=%s failures=%s",
		name, s.ok, s.failed, s.wall.Seconds(), float64(s.ok)/max(s.wall.Seconds(), 1e-9),
		ms(s.p50), ms(s.p99), ms(s.max), ms(s.r50), ms(s.r99), reasons)
}

func writeLatencies(path string, res []result) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "agent,connect_reg_ms,register_ms,error")
	for i, r := range res {
		e := ""
		if r.err != nil {
			e = strings.ReplaceAll(r.err.Error(), ",", ";")
		}
		fmt.Fprintf(w, "%d,%.3f,%.3f,%s\n", i+1, float64(r.total)/1e6, float64(r.reg)/1e6, e)
	}
	_ = w.Flush()
}

// ---------------------------------------------------------------- gateway memory

type mem struct {
	rssKB                       int64
	heapInuse, heapAlloc, stack float64 // bytes, from /metrics; -1 unknown
	goroutines, sockets, regs   float64
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux), -1 unknown.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// cpuLine is the CPU the gateway and this client spent between two samples.
func cpuLine(name string, pid int, g0, s0 int64, n int) string {
	g1, s1 := cpuTicks(pid), cpuTicks(os.Getpid())
	if g0 < 0 || g1 < 0 || n == 0 {
		return fmt.Sprintf("CPU %s na", name)
	}
	return fmt.Sprintf("CPU %s gateway_s=%.2f gateway_us_per_agent=%.0f client_s=%.2f", name,
		float64(g1-g0)/100, float64(g1-g0)*1e4/float64(n), float64(s1-s0)/100)
}

func (c *client) httpClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: c.dialer.TLSClientConfig}}
}

func (c *client) metrics() map[string]float64 {
	out := map[string]float64{}
	if c.o.metricsURL == "" {
		return out
	}
	resp, err := c.httpClient().Get(c.o.metricsURL)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 32<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out
}

func get(m map[string]float64, k string) float64 {
	if v, ok := m[k]; ok {
		return v
	}
	return -1
}

// sample forces a GC in the gateway (the pprof heap endpoint with gc=1, twice: the scavenger
// returns what the previous cycle freed), keeps the heap profile, waits for RSS to stay put
// and reads it.
func (c *client) sample(ctx context.Context, label string) mem {
	if c.o.gcURL != "" {
		hc := c.httpClient()
		for i := range 2 {
			resp, err := hc.Get(c.o.gcURL)
			if err != nil {
				break
			}
			if i == 1 {
				if f, err := os.Create(filepath.Join(c.o.out, "heap-"+label+".pprof")); err == nil {
					_, _ = io.Copy(f, resp.Body)
					f.Close()
				}
			}
			resp.Body.Close()
			sleep(ctx, time.Second)
		}
		// what the goroutines are, grouped by stack (where the stack memory goes)
		if u, ok := strings.CutSuffix(c.o.gcURL, "heap?gc=1"); ok {
			if resp, err := hc.Get(u + "goroutine?debug=1"); err == nil {
				if f, err := os.Create(filepath.Join(c.o.out, "goroutines-"+label+".txt")); err == nil {
					_, _ = io.Copy(f, io.LimitReader(resp.Body, 8<<20))
					f.Close()
				}
				resp.Body.Close()
			}
		}
	}
	prev := int64(-1)
	for range 15 {
		cur := vmRSS(c.o.pid)
		if prev >= 0 && cur-prev < 1024 && prev-cur < 1024 {
			break
		}
		prev = cur
		sleep(ctx, 2*time.Second)
	}
	m := c.metrics()
	return mem{rssKB: vmRSS(c.o.pid), heapInuse: get(m, "go_memstats_heap_inuse_bytes"),
		heapAlloc: get(m, "go_memstats_heap_alloc_bytes"), stack: get(m, "go_memstats_stack_inuse_bytes"),
		goroutines: get(m, "go_goroutines"), sockets: get(m, "gateway_bridge_sockets"),
		regs: get(m, "gateway_sip_registrations")}
}

func (m mem) line(label string) string {
	return fmt.Sprintf("MEM %s rss_kb=%d heap_inuse_mb=%.1f heap_alloc_mb=%.1f stack_inuse_mb=%.1f goroutines=%.0f sockets=%.0f registrations=%.0f",
		label, m.rssKB, m.heapInuse/(1<<20), m.heapAlloc/(1<<20), m.stack/(1<<20), m.goroutines, m.sockets, m.regs)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitFor polls /metrics until sockets and registrations both equal n (old sockets of the
// storm gone, new ones registered), for at most d.
func (c *client) waitFor(ctx context.Context, n int, d time.Duration) (float64, float64, time.Duration) {
	t0 := time.Now()
	var s, r float64
	for time.Since(t0) < d && ctx.Err() == nil {
		m := c.metrics()
		s, r = get(m, "gateway_bridge_sockets"), get(m, "gateway_sip_registrations")
		if s == float64(n) && r == float64(n) || s < 0 {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return s, r, time.Since(t0)
}

// ---------------------------------------------------------------- the run

func run(o options) (bool, error) {
	if o.n < 1 || o.n > 9999999 || o.conc < 1 || o.srcCount < 1 || o.srcCount > 60000 {
		return false, errors.New("-n must be 1..9999999, -conc and -src-count positive (src-count at most 60000)")
	}
	if o.stormConc <= 0 {
		o.stormConc = o.n
	}
	raw, err := os.ReadFile(o.secret)
	if err != nil {
		return false, fmt.Errorf("-secret: %w", err)
	}
	secret := []byte(strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r"))
	src, err := netip.ParseAddr(o.src)
	if err != nil || !src.Is4() || !src.IsLoopback() {
		return false, fmt.Errorf("-src %q: want an IPv4 loopback address", o.src)
	}
	c, err := newClient(o)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.deadline)
	defer cancel()

	// agents and their tokens (lifetime: the whole run and a margin)
	agents := make([]*agent, o.n)
	now := time.Now()
	srcs := make([]netip.Addr, o.srcCount)
	for i, a := 0, src; i < o.srcCount; i++ {
		if !a.IsLoopback() {
			return false, fmt.Errorf("-src %s + %d leaves 127.0.0.0/8", o.src, i)
		}
		srcs[i] = a
		a = a.Next()
	}
	for i := range agents {
		user := fmt.Sprintf("%s%07d", o.prefix, i+1)
		claims := jwt.MapClaims{"iss": o.iss, "aud": []string{o.aud}, "sub": user, "roles": []string{"agent"},
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(o.deadline + 10*time.Minute).Unix(), "jti": randHex(8)}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			return false, err
		}
		agents[i] = &agent{user: user, src: srcs[i%o.srcCount], token: tok, callID: randHex(12),
			tag: randHex(5), host: randHex(6)}
	}
	fmt.Printf("wsload: %d agents from %d source addresses (%s..%s), %s, fill concurrency %d, storm concurrency %d\n",
		o.n, o.srcCount, srcs[0], srcs[len(srcs)-1], o.url, o.conc, o.stormConc)

	ok := true
	base := c.sample(ctx, "base")
	fmt.Println(base.line("base"))

	// 1. fill
	g0, s0 := cpuTicks(o.pid), cpuTicks(os.Getpid())
	t0 := time.Now()
	res := c.phase(ctx, agents, o.conc)
	fill := summarize(res, time.Since(t0))
	writeLatencies(filepath.Join(o.out, "fill-latency.csv"), res)
	fmt.Println(fill.line("FILL"))
	fmt.Println(cpuLine("fill", o.pid, g0, s0, fill.ok))
	if fill.failed > 0 {
		ok = false
	}
	s, r, _ := c.waitFor(ctx, fill.ok, 10*time.Second)
	fmt.Printf("GATEWAY after fill: sockets=%.0f registrations=%.0f (want %d)\n", s, r, fill.ok)

	// 2. idle with keepalives, then memory
	fmt.Printf("idle %s with every agent registered (keepalives)...\n", o.idle)
	sleep(ctx, o.idle)
	pings, opts, drops := c.st.pings.Load(), c.st.options.Load(), c.st.dropped.Load()
	fmt.Printf("IDLE seconds=%.0f pings_answered=%d options_answered=%d sockets_lost=%d\n", o.idle.Seconds(), pings, opts, drops)
	if drops > 0 {
		ok = false
	}
	sleep(ctx, o.settle)
	loaded := c.sample(ctx, "agents")
	fmt.Println(loaded.line("agents"))
	if fill.ok > 0 && base.rssKB > 0 {
		fmt.Printf("PER_AGENT agents=%d rss_kib=%.1f heap_inuse_kib=%.1f heap_alloc_kib=%.1f stack_kib=%.1f goroutines=%.1f\n", fill.ok,
			float64(loaded.rssKB-base.rssKB)/float64(fill.ok),
			(loaded.heapInuse-base.heapInuse)/1024/float64(fill.ok),
			(loaded.heapAlloc-base.heapAlloc)/1024/float64(fill.ok),
			(loaded.stack-base.stack)/1024/float64(fill.ok),
			(loaded.goroutines-base.goroutines)/float64(fill.ok))
	}

	// 3. storm: the registered agents drop at once and come back at once
	var live []*agent
	for i, a := range agents {
		if res[i].err == nil {
			live = append(live, a)
		}
	}
	g0, s0 = cpuTicks(o.pid), cpuTicks(os.Getpid())
	t0 = time.Now()
	c.closeAll(live)
	closed := time.Since(t0)
	res2 := c.phase(ctx, live, o.stormConc)
	storm := summarize(res2, time.Since(t0))
	writeLatencies(filepath.Join(o.out, "storm-latency.csv"), res2)
	fmt.Printf("storm: %d sockets closed in %s, reconnecting...\n", len(live), closed.Round(time.Millisecond))
	fmt.Println(storm.line("STORM"))
	fmt.Println(cpuLine("storm", o.pid, g0, s0, storm.ok))
	if storm.failed > 0 {
		ok = false
	}
	s, r, took := c.waitFor(ctx, storm.ok, 60*time.Second)
	fmt.Printf("GATEWAY after storm: sockets=%.0f registrations=%.0f (want %d) after %.1fs\n", s, r, storm.ok, took.Seconds())
	if s >= 0 && (s != float64(storm.ok) || r != float64(storm.ok)) {
		fmt.Println("MISMATCH: the gateway's sockets or bindings do not match the registered agents")
		ok = false
	}
	sleep(ctx, o.settle)
	after := c.sample(ctx, "storm")
	fmt.Println(after.line("after-storm"))
	if storm.ok > 0 && base.rssKB > 0 {
		fmt.Printf("PER_AGENT_AFTER_STORM agents=%d rss_kib=%.1f heap_inuse_kib=%.1f\n", storm.ok,
			float64(after.rssKB-base.rssKB)/float64(storm.ok), (after.heapInuse-base.heapInuse)/1024/float64(storm.ok))
	}
	drops = c.st.dropped.Load()
	if drops > 0 {
		fmt.Printf("sockets lost while idle (whole run): %d\n", drops)
		ok = false
	}

	// 4. done
	c.closeAll(live)
	if ctx.Err() != nil {
		fmt.Println("DEADLINE: the run hit -deadline", o.deadline)
		ok = false
	}
	fmt.Printf("RESULT agents=%d fill_failed=%d storm_failed=%d idle_lost=%d rss_kib_per_agent=%.1f storm_wall_s=%.2f storm_p50_ms=%s storm_p99_ms=%s ok=%v\n",
		o.n, o.n-fill.ok, storm.failed, drops, float64(loaded.rssKB-base.rssKB)/float64(max(fill.ok, 1)),
		storm.wall.Seconds(), ms(storm.p50), ms(storm.p99), ok)
	return ok, nil
}
