package sip

import (
	"context"
	"errors"
	"time"

	gosip "github.com/emiago/sipgo/sip"
)

// Parallel forking (RFC 3261 §16.7) for calls to users: every binding of the user rings at
// once, the first 2xx wins and the other branches are cancelled, a 6xx ends the search, and
// when every branch has failed the caller gets the best final answer. Unlike a dispatcher
// call there is no failover here: a phone that answers 486 is busy, not broken.

type forkEvent struct {
	branch int
	res    *gosip.Response // nil when the branch failed without a final answer
	reason string          // why it failed: timeout, ring_timeout, transport
}

// fork relays req to every target at once and returns once the server transaction has its
// final answer.
func (r *Router) fork(req *gosip.Request, stx gosip.ServerTransaction, targets []target, log reqLog) {
	cancelled := make(chan struct{})
	if req.IsInvite() {
		stx.OnCancel(func(*gosip.Request) { close(cancelled) })
	}
	var d *dialog
	if req.IsInvite() {
		d = r.dialogs.begin(callID(req))
	}
	stop := make(chan struct{}) // closed when the fork is decided: pending branches are abandoned
	defer close(stop)
	events := make(chan forkEvent)
	dialogCreating := req.IsInvite() || req.Method == gosip.SUBSCRIBE || req.Method == gosip.REFER
	start := time.Now()

	pending := 0
	for i, t := range targets {
		if r.unreachable(t) {
			r.m.branchFail.WithLabelValues("transport").Inc()
			continue
		}
		fwd := forwardCopy(req)
		r.prepareForward(fwd, req, t, dialogCreating, r.branchID(req))
		dialCtx, cancel := context.Background(), context.CancelFunc(func() {})
		if t.transport != "UDP" {
			dialCtx, cancel = context.WithTimeout(dialCtx, r.cfg.Timers.Response)
		}
		btx, err := r.cli.TransactionRequest(dialCtx, fwd, prebuilt)
		cancel()
		if err != nil {
			log.Info("fork branch failed", "target", t.addr, "error", err)
			r.m.branchFail.WithLabelValues("transport").Inc()
			continue
		}
		pending++
		go r.forkBranch(i, btx, fwd, events, stop)
	}

	var best *gosip.Response
	for pending > 0 {
		select {
		case ev := <-events:
			if ev.res != nil && ev.res.IsProvisional() {
				if ev.res.StatusCode > 100 {
					r.relayResponse(stx, req, ev.res)
				}
				continue
			}
			pending--
			if ev.res == nil {
				r.m.branchFail.WithLabelValues(ev.reason).Inc()
				continue
			}
			code := int(ev.res.StatusCode)
			if code < 300 || code >= 600 {
				if d != nil {
					if code < 300 {
						r.dialogs.confirm(d, nil, start)
					} else {
						r.dialogs.fail(d)
					}
				}
				r.relayResponse(stx, req, ev.res)
				return // the deferred close(stop) cancels the other branches
			}
			if best == nil || betterFinal(code, int(best.StatusCode)) {
				best = ev.res
			}
		case <-cancelled:
			// The transaction layer answered the CANCEL and sent 487 upstream.
			if d != nil {
				r.dialogs.fail(d)
			}
			return
		}
	}
	if d != nil {
		r.dialogs.fail(d)
	}
	if best != nil {
		r.relayResponse(stx, req, best)
		return
	}
	log.Info("no binding answered", "bindings", len(targets))
	r.reply(stx, req, 480, "Temporarily Unavailable", nil)
}

// betterFinal orders non-2xx, non-6xx finals by RFC 3261 §16.7 step 6: the lowest class wins,
// and within a class the first one stays.
func betterFinal(code, than int) bool { return code/100 < than/100 }

// forkBranch follows one branch and reports to the fork; when the fork is decided (stop) it
// abandons the branch, cancelling it if it is ringing.
func (r *Router) forkBranch(i int, btx gosip.ClientTransaction, fwd *gosip.Request, events chan<- forkEvent, stop <-chan struct{}) {
	report := func(ev forkEvent) bool {
		select {
		case events <- ev:
			return true
		case <-stop:
			return false
		}
	}
	fr := time.NewTimer(r.cfg.Timers.Response)
	defer fr.Stop()
	var frInv <-chan time.Time
	provisional := false
	for {
		select {
		case res := <-btx.Responses():
			if res.IsProvisional() {
				if !provisional {
					provisional = true
					fr.Stop()
					if fwd.IsInvite() {
						tm := time.NewTimer(r.cfg.Timers.InviteFinal)
						defer tm.Stop()
						frInv = tm.C
					}
				}
				if !report(forkEvent{branch: i, res: res}) {
					go r.abandon(btx, fwd, true)
					return
				}
				continue
			}
			if !report(forkEvent{branch: i, res: res}) && res.IsSuccess() {
				// Another branch won first: this phone answered too late.
				r.hangUpLate(fwd, res)
			}
			btx.Terminate()
			return
		case <-fr.C:
			go r.abandon(btx, fwd, false)
			report(forkEvent{branch: i, reason: "timeout"})
			return
		case <-frInv:
			go r.abandon(btx, fwd, true)
			report(forkEvent{branch: i, reason: "ring_timeout"})
			return
		case <-btx.Done():
			reason := "timeout"
			if errors.Is(btx.Err(), gosip.ErrTransactionTransport) {
				reason = "transport"
			}
			report(forkEvent{branch: i, reason: reason})
			return
		case <-stop:
			go r.abandon(btx, fwd, provisional)
			return
		}
	}
}
