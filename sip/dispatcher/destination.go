// Package dispatcher spreads new calls over sets of backend destinations (the FreeSWITCH
// cluster), in the manner of Kamailio's dispatcher module: sets, the same algorithm
// numbers, weights, priorities, call-load limits and OPTIONS health probing.
package dispatcher

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is a destination's availability for new calls. In-dialog requests never consult it:
// they follow Record-Route to whichever backend answered.
type State int32

const (
	// Active destinations take new calls.
	Active State = iota
	// Inactive destinations failed their health probes; probing continues and brings them back.
	Inactive
	// Draining destinations take no new calls but keep their live calls and are still probed.
	Draining
	// Disabled destinations take no new calls and are not probed.
	Disabled
)

func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Inactive:
		return "inactive"
	case Draining:
		return "draining"
	case Disabled:
		return "disabled"
	}
	return "unknown"
}

// ParseState reads a state name as written in config and in the admin API.
func ParseState(s string) (State, error) {
	switch strings.ToLower(s) {
	case "active", "":
		return Active, nil
	case "inactive":
		return Inactive, nil
	case "draining":
		return Draining, nil
	case "disabled":
		return Disabled, nil
	}
	return Active, fmt.Errorf("unknown destination state %q (want active, inactive, draining or disabled)", s)
}

// Kamailio dispatcher.list flag bits that the list format carries.
const (
	flagInactive = 1
	flagDisabled = 4
)

// Destination is one backend of a set. Configuration fields are immutable after load;
// the live fields (state, calls, latency) are atomics so the per-call path takes no lock.
type Destination struct {
	SetID     int
	URI       string // as written in the list, e.g. sip:10.0.0.5:5060;transport=tcp
	Host      string
	Port      int
	Transport string // "udp", "tcp" or "tls", from the URI as Kamailio does
	Priority  int
	Weight    int
	RWeight   int // relative weight for algorithm 11; defaults to Weight
	MaxLoad   int // 0: unlimited
	DUID      string

	state atomic.Int32
	calls *atomic.Int64 // shared with this destination's predecessors across reloads
	rtt   atomic.Int64  // smoothed probe round trip in nanoseconds; 0 until the first answer

	probeMu    sync.Mutex
	probeFails int
	probeOKs   int
	lastProbe  time.Time
	lastReason string
}

// Addr is the host:port that requests for this destination are sent to.
func (d *Destination) Addr() string { return net.JoinHostPort(d.Host, strconv.Itoa(d.Port)) }

// State reports the destination's current state.
func (d *Destination) State() State { return State(d.state.Load()) }

// ActiveCalls is the number of calls the dialog tracker currently counts against this destination.
func (d *Destination) ActiveCalls() int64 { return d.calls.Load() }

// RTT is the smoothed probe round-trip time (zero before the first successful probe).
func (d *Destination) RTT() time.Duration { return time.Duration(d.rtt.Load()) }

// CallStarted and CallEnded feed the call-load algorithm and the active-calls gauges.
func (d *Destination) CallStarted() { d.calls.Add(1) }

// CallEnded is the counterpart of CallStarted.
func (d *Destination) CallEnded() { d.calls.Add(-1) }

// usable reports whether the destination may take a new call right now.
func (d *Destination) usable() bool {
	if d.State() != Active {
		return false
	}
	return d.MaxLoad <= 0 || d.calls.Load() < int64(d.MaxLoad)
}

// key identifies a destination across reloads so live state survives them.
func (d *Destination) key() string { return strconv.Itoa(d.SetID) + " " + d.URI }

// parseURI fills Host, Port and Transport from a sip:/sips: URI.
func (d *Destination) parseURI() error {
	u := d.URI
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok {
		return fmt.Errorf("destination %q: not a SIP URI", u)
	}
	secure := false
	switch strings.ToLower(scheme) {
	case "sip":
		d.Transport = "udp"
	case "sips":
		d.Transport = "tls"
		secure = true
	default:
		return fmt.Errorf("destination %q: scheme %q is not sip or sips", u, scheme)
	}
	hostport, params, _ := strings.Cut(rest, ";")
	if i := strings.LastIndexByte(hostport, '@'); i >= 0 {
		hostport = hostport[i+1:]
	}
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "transport") {
			switch t := strings.ToLower(v); {
			case secure && t == "udp":
				return fmt.Errorf("destination %q: sips needs TLS, which does not run over udp", u)
			case secure && (t == "tcp" || t == "tls"):
				d.Transport = "tls" // RFC 5630 3.1.3: sips with transport=tcp is TLS over TCP
			case t == "udp" || t == "tcp" || t == "tls":
				d.Transport = t
			default:
				return fmt.Errorf("destination %q: transport %q not supported (udp, tcp, tls)", u, v)
			}
		}
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("destination %q: %w", u, err)
	}
	if host == "" {
		return fmt.Errorf("destination %q: empty host", u)
	}
	if port == 0 {
		port = 5060
		if d.Transport == "tls" {
			port = 5061
		}
	}
	d.Host, d.Port = host, port
	return nil
}

func splitHostPort(hp string) (string, int, error) {
	if hp == "" {
		return "", 0, fmt.Errorf("empty host")
	}
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("unterminated IPv6 reference %q", hp)
		}
		host, rest := hp[1:end], hp[end+1:]
		if rest == "" {
			return host, 0, nil
		}
		if rest[0] != ':' {
			return "", 0, fmt.Errorf("bad host:port %q", hp)
		}
		p, err := parsePort(rest[1:])
		return host, p, err
	}
	host, port, found := strings.Cut(hp, ":")
	if !found {
		return host, 0, nil
	}
	p, err := parsePort(port)
	return host, p, err
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return p, nil
}
