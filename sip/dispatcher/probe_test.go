package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// outcome of one probe in a scripted sequence: 'S' a 200, 'F' a transport error, 'N' a 503.
func feed(d *Dispatcher, cfg ProbeConfig, dst *Destination, o byte) {
	switch o {
	case 'S':
		d.probeResult(cfg, dst, 200, nil, time.Millisecond)
	case 'N':
		d.probeResult(cfg, dst, 503, nil, time.Millisecond)
	case 'F':
		d.probeResult(cfg, dst, 0, errors.New("timeout"), time.Second)
	}
}

func TestProbeResultStateMachine(t *testing.T) {
	// A=active, I=inactive, D=draining, X=disabled: the state after each probe.
	tests := []struct {
		name      string
		start     string // configured state
		flags     int
		threshold int
		recover   int
		probes    string
		want      string
	}{
		{"threshold failures mark inactive", "", 0, 3, 1, "FFF", "AAI"},
		{"503 counts as failure", "", 0, 3, 1, "NNN", "AAI"},
		{"success resets the count", "", 0, 3, 1, "FFSFFSFFF", "AAAAAAAAI"},
		{"threshold 1", "", 0, 1, 1, "F", "I"},
		{"stays inactive while failing", "", 0, 2, 1, "FFFFF", "AIIII"},
		{"one success recovers by default", "", 0, 2, 1, "FFS", "AIA"},
		{"recover needs consecutive successes", "", 0, 2, 3, "FFSSFSSS", "AIIIIIIA"},
		{"flagged inactive comes back", "", flagInactive, 3, 2, "SS", "IA"},
		{"flagged inactive stays while failing", "", flagInactive, 3, 2, "FSFS", "IIII"},
		{"after recovery the count starts again", "", 0, 2, 1, "FFSFSFF", "AIAAAAI"},
		{"draining is never marked inactive", "draining", 0, 1, 1, "FFFFF", "DDDDD"},
		{"draining is never made active", "draining", 0, 1, 1, "FSSS", "DDDD"},
	}
	letter := map[State]byte{Active: 'A', Inactive: 'I', Draining: 'D', Disabled: 'X'}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ProbeConfig{Threshold: tt.threshold, Recover: tt.recover, ReplyCodes: []string{"2xx"}}
			d := newTest(t, []Spec{{SetID: 1, URI: "sip:10.0.0.1", Flags: tt.flags, State: tt.start}})
			dst := mustFind(t, d, 1, "sip:10.0.0.1")
			var got []byte
			for i := range len(tt.probes) {
				feed(d, cfg, dst, tt.probes[i])
				got = append(got, letter[dst.State()])
			}
			if string(got) != tt.want {
				t.Errorf("probes %s: states %s, want %s", tt.probes, got, tt.want)
			}
		})
	}
}

func TestProbeReplyCodes(t *testing.T) {
	tests := []struct {
		codes []string
		code  int
		ok    bool
	}{
		{[]string{"2xx"}, 200, true},
		{[]string{"2xx"}, 202, true},
		{[]string{"2xx"}, 299, true},
		{[]string{"2xx"}, 183, false},
		{[]string{"2xx"}, 300, false},
		{[]string{"2xx"}, 404, false},
		{[]string{"2XX"}, 200, true},
		{[]string{"200"}, 200, true},
		{[]string{"200"}, 202, false},
		{[]string{"404"}, 404, true},
		{[]string{"404"}, 200, false},
		{[]string{"404"}, 405, false},
		{[]string{"2xx", "404"}, 404, true},
		{[]string{"2xx", "404"}, 200, true},
		{[]string{"2xx", "404"}, 503, false},
		{[]string{" 4xx "}, 481, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", strings.Join(tt.codes, ","), tt.code), func(t *testing.T) {
			cfg := ProbeConfig{Interval: time.Second, Timeout: time.Second, Threshold: 1, Recover: 1, ReplyCodes: tt.codes}
			if errs := cfg.Validate(); len(errs) != 0 {
				t.Fatalf("Validate: %v", errs)
			}
			d := newTest(t, []Spec{{SetID: 1, URI: "sip:10.0.0.1"}})
			dst := mustFind(t, d, 1, "sip:10.0.0.1")
			d.probeResult(cfg, dst, tt.code, nil, time.Millisecond)
			if healthy := dst.State() == Active; healthy != tt.ok {
				t.Errorf("answer %d with reply_codes %v: state %v, want healthy=%v", tt.code, tt.codes, dst.State(), tt.ok)
			}
			_, reason := dst.ProbeStatus()
			if want := fmt.Sprintf("probe answered %d", tt.code); reason != want {
				t.Errorf("reason %q, want %q", reason, want)
			}
			if got := dst.RTT() > 0; got != tt.ok {
				t.Errorf("RTT %v recorded=%v, want %v (only healthy answers count)", dst.RTT(), got, tt.ok)
			}
		})
	}

	t.Run("transport error fails whatever the code", func(t *testing.T) {
		cfg := ProbeConfig{Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}}
		d := newTest(t, []Spec{{SetID: 1, URI: "sip:10.0.0.1"}})
		dst := mustFind(t, d, 1, "sip:10.0.0.1")
		d.probeResult(cfg, dst, 200, errors.New("connection refused"), time.Millisecond)
		if dst.State() != Inactive {
			t.Errorf("state %v, want inactive", dst.State())
		}
		if last, reason := dst.ProbeStatus(); last.IsZero() || !strings.Contains(reason, "connection refused") {
			t.Errorf("ProbeStatus = %v, %q", last, reason)
		}
	})
}

func TestProbeConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ProbeConfig
		want []string // one fragment per expected problem, in order
	}{
		{"defaults", DefaultProbeConfig(), nil},
		{"timeout longer than interval is clamped, not an error",
			ProbeConfig{Interval: time.Second, Timeout: time.Minute, Threshold: 1, Recover: 1, ReplyCodes: []string{"200"}}, nil},
		{"zero value", ProbeConfig{}, []string{"interval", "timeout", "threshold", "recover", "at least one code"}},
		{"negative durations", ProbeConfig{Interval: -1, Timeout: -1, Threshold: 1, Recover: 1, ReplyCodes: []string{"2xx"}},
			[]string{"interval", "timeout"}},
		{"bad codes all reported", ProbeConfig{Interval: 1, Timeout: 1, Threshold: 1, Recover: 1,
			ReplyCodes: []string{"2x", "700", "ok", "099", "7xx", "200", "0xx", ""}},
			[]string{`"2x"`, `"700"`, `"ok"`, `"099"`, `"7xx"`, `"0xx"`, `""`}},
		{"everything wrong at once", ProbeConfig{Threshold: -1, ReplyCodes: []string{"abc"}},
			[]string{"interval", "timeout", "threshold", "recover", `"abc"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.cfg.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d", len(errs), errs, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("problem %d %q does not mention %q", i, errs[i], w)
				}
			}
		})
	}
}

// scriptPinger answers each destination's n-th probe (1-based) with reply(uri, n). When any
// destination is about to get probe stopAt, every earlier round has been fully recorded (rounds
// do not overlap), so it closes reached and holds the probe until the test's context ends; the
// dispatcher then discards that round as a shutdown.
type scriptPinger struct {
	parent  context.Context
	stopAt  int
	reply   func(ctx context.Context, uri string, n int) (int, error)
	reached chan struct{}
	once    sync.Once

	mu    sync.Mutex
	calls map[string]int
}

func (p *scriptPinger) Ping(ctx context.Context, dst *Destination) (int, error) {
	p.mu.Lock()
	p.calls[dst.URI]++
	n := p.calls[dst.URI]
	p.mu.Unlock()
	if n >= p.stopAt {
		p.once.Do(func() { close(p.reached) })
		<-p.parent.Done()
		return 0, p.parent.Err()
	}
	return p.reply(ctx, dst.URI, n)
}

func (p *scriptPinger) count(uri string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[uri]
}

func TestProbeLoop(t *testing.T) {
	const rounds = 6
	specs := []Spec{
		{SetID: 1, URI: "sip:up"},
		{SetID: 1, URI: "sip:down"},
		{SetID: 1, URI: "sip:flaky"},
		{SetID: 1, URI: "sip:back", Flags: flagInactive},
		{SetID: 1, URI: "sip:slow"},
		{SetID: 2, URI: "sip:drain", State: "draining"},
		{SetID: 2, URI: "sip:off", Flags: flagDisabled},
		{SetID: 2, URI: "sip:notfound"},
	}
	want := []struct {
		set int
		uri string
		st  State
	}{
		{1, "sip:up", Active}, {1, "sip:down", Inactive}, {1, "sip:flaky", Active}, {1, "sip:back", Active},
		{1, "sip:slow", Inactive}, {2, "sip:drain", Draining}, {2, "sip:off", Disabled}, {2, "sip:notfound", Active},
	}
	cfg := ProbeConfig{
		Interval:   2 * time.Millisecond,
		Timeout:    time.Hour, // clamped to Interval, or "slow" would hang the test
		Threshold:  3,
		Recover:    2,
		ReplyCodes: []string{"2xx", "404"},
	}
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p := &scriptPinger{
		parent: ctx, stopAt: rounds + 1, reached: make(chan struct{}), calls: map[string]int{},
		reply: func(pctx context.Context, uri string, n int) (int, error) {
			switch uri {
			case "sip:down", "sip:drain":
				return 0, errors.New("no route to host")
			case "sip:flaky": // F F S F F S: never three failures in a row
				if n%3 == 0 {
					return 200, nil
				}
				return 503, nil
			case "sip:slow":
				<-pctx.Done()
				return 0, pctx.Err()
			case "sip:notfound":
				return 404, nil
			}
			return 200, nil
		},
	}
	d := newTest(t, specs)
	done := make(chan struct{})
	go func() { defer close(done); d.Probe(ctx, cfg, p) }()
	select {
	case <-p.reached:
	case <-ctx.Done():
		t.Fatalf("probing did not reach round %d before the deadline", rounds+1)
	}
	cancel()
	<-done

	for _, w := range want {
		uri, st := w.uri, w.st
		dst := mustFind(t, d, w.set, uri)
		if dst.State() != st {
			_, reason := dst.ProbeStatus()
			t.Errorf("%s: state %v, want %v (last probe: %s)", uri, dst.State(), st, reason)
		}
		// Every round probes every destination but the disabled one. The round that reaches
		// stopAt may be followed by one more tick before the cancel lands (a loaded machine),
		// so one extra probe is allowed; fewer is a skipped round.
		got := p.count(uri)
		switch {
		case uri == "sip:off" && got != 0:
			t.Errorf("disabled %s probed %d times", uri, got)
		case uri != "sip:off" && (got < rounds+1 || got > rounds+2):
			t.Errorf("%s probed %d times, want %d (or one more)", uri, got, rounds+1)
		}
	}
	if up := mustFind(t, d, 1, "sip:up"); up.RTT() <= 0 {
		t.Errorf("sip:up has no RTT after %d good probes", rounds)
	}
	if _, reason := mustFind(t, d, 1, "sip:down").ProbeStatus(); !strings.Contains(reason, "no route to host") {
		t.Errorf("sip:down reason %q", reason)
	}
	if _, reason := mustFind(t, d, 1, "sip:slow").ProbeStatus(); !strings.Contains(reason, "deadline exceeded") {
		t.Errorf("sip:slow reason %q", reason)
	}
}
