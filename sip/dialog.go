package sip

import (
	"context"
	"sync"
	"time"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

// dialog is the proxy's record of one call: which backend has it, and since when. It feeds the
// call-load algorithm and the active-call gauges; routing never depends on it (Record-Route
// does that), so losing a record costs a statistic, not a call.
type dialog struct {
	callID   string
	mu       sync.Mutex
	backend  *dispatcher.Destination
	started  time.Time
	answered time.Time
	ended    bool
}

// DialogInfo is a read-only view of a tracked dialog for the admin API.
type DialogInfo struct {
	CallID   string
	Backend  string
	State    string // "early" or "confirmed"
	Started  time.Time
	Answered time.Time
}

// assign moves the call's load onto the destination now being tried.
func (d *dialog) assign(dst *dispatcher.Destination) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended || d.backend == dst {
		return
	}
	if d.backend != nil {
		d.backend.CallEnded()
	}
	d.backend = dst
	if dst != nil {
		dst.CallStarted()
	}
}

type dialogs struct {
	m      *metrics
	mu     sync.Mutex
	byCall map[string]*dialog
}

func newDialogs(m *metrics) *dialogs {
	return &dialogs{m: m, byCall: map[string]*dialog{}}
}

func (ds *dialogs) begin(callID string) *dialog {
	d := &dialog{callID: callID, started: time.Now()}
	ds.mu.Lock()
	if old := ds.byCall[callID]; old != nil {
		ds.mu.Unlock()
		ds.close(old, "replaced")
		ds.mu.Lock()
	}
	ds.byCall[callID] = d
	n := len(ds.byCall)
	ds.mu.Unlock()
	ds.m.dialogs.Set(float64(n))
	return d
}

// end finishes the dialog with this Call-ID, if we track one.
func (ds *dialogs) end(callID, reason string) {
	ds.mu.Lock()
	d := ds.byCall[callID]
	ds.mu.Unlock()
	if d != nil {
		ds.close(d, reason)
	}
}

// confirm records the answer and the setup time of the branch that won.
func (ds *dialogs) confirm(d *dialog, dst *dispatcher.Destination, branchStart time.Time) {
	d.mu.Lock()
	d.answered = time.Now()
	d.mu.Unlock()
	if dst != nil {
		ds.m.setup.WithLabelValues(dst.URI).Observe(time.Since(branchStart).Seconds())
	}
}

func (ds *dialogs) fail(d *dialog) { ds.close(d, "failed") }

func (ds *dialogs) close(d *dialog, reason string) {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		return
	}
	d.ended = true
	if d.backend != nil {
		d.backend.CallEnded()
	}
	d.mu.Unlock()
	ds.mu.Lock()
	if ds.byCall[d.callID] == d {
		delete(ds.byCall, d.callID)
	}
	n := len(ds.byCall)
	ds.mu.Unlock()
	ds.m.dialogs.Set(float64(n))
	ds.m.dialogsEnded.WithLabelValues(reason).Inc()
}

// sweep ends dialogs whose BYE was never seen, once they pass maxAge.
func (ds *dialogs) sweep(ctx context.Context, maxAge time.Duration) {
	t := time.NewTicker(min(maxAge/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var stale []*dialog
		cutoff := time.Now().Add(-maxAge)
		ds.mu.Lock()
		for _, d := range ds.byCall {
			if d.started.Before(cutoff) {
				stale = append(stale, d)
			}
		}
		ds.mu.Unlock()
		for _, d := range stale {
			ds.close(d, "max_duration")
		}
	}
}

// List returns a snapshot of tracked dialogs.
func (ds *dialogs) list() []DialogInfo {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	out := make([]DialogInfo, 0, len(ds.byCall))
	for _, d := range ds.byCall {
		d.mu.Lock()
		info := DialogInfo{CallID: d.callID, Started: d.started, Answered: d.answered, State: "early"}
		if !d.answered.IsZero() {
			info.State = "confirmed"
		}
		if d.backend != nil {
			info.Backend = d.backend.URI
		}
		d.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// Dialogs returns the calls the proxy currently tracks.
func (r *Router) Dialogs() []DialogInfo { return r.dialogs.list() }
