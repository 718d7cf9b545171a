package dispatcher

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pinger sends one health probe (a SIP OPTIONS) to a destination and reports the final
// status code. The SIP router implements it; tests may use a real SIP peer behind it.
type Pinger interface {
	Ping(ctx context.Context, dst *Destination) (status int, err error)
}

// ProbeConfig controls OPTIONS health probing (Kamailio's ds_ping_* parameters).
type ProbeConfig struct {
	// Interval between probe rounds. Default 10s. A dead destination is noticed within
	// Interval × Threshold.
	Interval time.Duration `yaml:"interval"`
	// Timeout for one probe. Default 2s, and never longer than Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Threshold consecutive failed probes mark a destination inactive. Default 3.
	Threshold int `yaml:"threshold"`
	// Recover consecutive good probes mark it active again. Default 1.
	Recover int `yaml:"recover"`
	// ReplyCodes accepted as healthy: exact codes ("200", "404") or classes ("2xx").
	// Default ["2xx"].
	ReplyCodes []string `yaml:"reply_codes"`
}

// DefaultProbeConfig returns the defaults documented on ProbeConfig.
func DefaultProbeConfig() ProbeConfig {
	return ProbeConfig{Interval: 10 * time.Second, Timeout: 2 * time.Second, Threshold: 3, Recover: 1,
		ReplyCodes: []string{"2xx"}}
}

// Validate reports every problem in the probe settings.
func (c ProbeConfig) Validate() []error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("probe.interval must be positive"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("probe.timeout must be positive"))
	}
	if c.Threshold < 1 {
		errs = append(errs, fmt.Errorf("probe.threshold must be at least 1"))
	}
	if c.Recover < 1 {
		errs = append(errs, fmt.Errorf("probe.recover must be at least 1"))
	}
	if len(c.ReplyCodes) == 0 {
		errs = append(errs, fmt.Errorf("probe.reply_codes must list at least one code or class"))
	}
	for _, rc := range c.ReplyCodes {
		if _, _, err := parseReplyCode(rc); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// parseReplyCode turns "200" into [200,200] and "2xx" into [200,299].
func parseReplyCode(s string) (lo, hi int, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '6' {
		c := int(s[0]-'0') * 100
		return c, c + 99, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 699 {
		return 0, 0, fmt.Errorf("probe.reply_codes: %q is neither a status code nor a class like 2xx", s)
	}
	return n, n, nil
}

func (c ProbeConfig) accepts(code int) bool {
	for _, rc := range c.ReplyCodes {
		if lo, hi, err := parseReplyCode(rc); err == nil && code >= lo && code <= hi {
			return true
		}
	}
	return false
}

// rttSmoothing is the weight of a new sample in the latency average: enough to follow a real
// change within a few probes without jumping at one slow answer.
const rttSmoothing = 0.3

// Probe runs health probing until ctx ends. Each round probes every destination that is not
// disabled, concurrently, and waits for all answers before the next round, so a slow backend
// never piles up probes. Destinations added by a reload are probed from the next round on.
func (d *Dispatcher) Probe(ctx context.Context, cfg ProbeConfig, p Pinger) {
	timeout := min(cfg.Timeout, cfg.Interval)
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		d.probeRound(ctx, cfg, timeout, p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Dispatcher) probeRound(ctx context.Context, cfg ProbeConfig, timeout time.Duration, p Pinger) {
	var wg sync.WaitGroup
	for _, set := range d.Sets() {
		for _, dst := range set.Dests {
			if dst.State() == Disabled {
				continue
			}
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				start := time.Now()
				code, err := p.Ping(pctx, dst)
				if ctx.Err() != nil {
					return // shutting down: not the backend's fault
				}
				d.probeResult(cfg, dst, code, err, time.Since(start))
			})
		}
	}
	wg.Wait()
}

func (d *Dispatcher) probeResult(cfg ProbeConfig, dst *Destination, code int, err error, rtt time.Duration) {
	ok := err == nil && cfg.accepts(code)
	var reason string
	switch {
	case err != nil:
		reason = "probe failed: " + err.Error()
	case !ok:
		reason = "probe answered " + strconv.Itoa(code)
	default:
		reason = "probe answered " + strconv.Itoa(code)
		old := dst.rtt.Load()
		if old == 0 {
			dst.rtt.Store(int64(rtt))
		} else {
			dst.rtt.Store(int64(float64(old)*(1-rttSmoothing) + float64(rtt)*rttSmoothing))
		}
		d.metrics.observeRTT(dst, rtt)
	}
	d.metrics.probe(dst, ok)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Find(dst.SetID, dst.URI) != dst {
		// A reload replaced or removed dst while its probe was out. Its verdict must not
		// touch the state series, which now belong to the live destination (or to nobody);
		// the next round probes the live one.
		return
	}
	dst.probeMu.Lock()
	dst.lastProbe, dst.lastReason = time.Now(), reason
	if ok {
		dst.probeOKs++
		dst.probeFails = 0
	} else {
		dst.probeFails++
		dst.probeOKs = 0
	}
	fails, oks := dst.probeFails, dst.probeOKs
	dst.probeMu.Unlock()

	// Only probes move a destination between active and inactive. Failed calls do not: under
	// our own overload, call timeouts would otherwise mark healthy backends dead and turn a
	// brownout into an outage.
	switch st := dst.State(); {
	case st == Active && fails >= cfg.Threshold:
		d.transition(dst, Inactive, fmt.Sprintf("%d consecutive failed probes, last: %s", fails, reason))
	case st == Inactive && oks >= cfg.Recover:
		d.transition(dst, Active, fmt.Sprintf("%d consecutive good probes", oks))
	}
}

// ProbeStatus is the last probe verdict of a destination, for the admin API and logs.
func (dst *Destination) ProbeStatus() (last time.Time, reason string) {
	dst.probeMu.Lock()
	defer dst.probeMu.Unlock()
	return dst.lastProbe, dst.lastReason
}
