package sip

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dualgate/dualgate/sip/dispatcher"
)

func TestDialogLoadFollowsFailoverAndEnds(t *testing.T) {
	disp, err := dispatcher.New([]dispatcher.Spec{{SetID: 1, URI: "sip:127.0.0.1:5070"}, {SetID: 1, URI: "sip:127.0.0.1:5071"}},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := disp.Find(1, "sip:127.0.0.1:5070"), disp.Find(1, "sip:127.0.0.1:5071")
	ds := newDialogs(newMetrics(prometheus.NewRegistry()))

	d := ds.begin("call-1")
	d.assign(a)
	if a.ActiveCalls() != 1 {
		t.Fatalf("first branch: %d calls on a", a.ActiveCalls())
	}
	d.assign(b) // failover moves the call's load
	if a.ActiveCalls() != 0 || b.ActiveCalls() != 1 {
		t.Fatalf("after failover: a=%d b=%d", a.ActiveCalls(), b.ActiveCalls())
	}
	ds.confirm(d, b, time.Now())
	if got := ds.list(); len(got) != 1 || got[0].State != "confirmed" || got[0].Backend != b.URI {
		t.Fatalf("dialogs = %+v", got)
	}
	ds.end("call-1", "bye")
	ds.end("call-1", "bye") // a retransmitted BYE must not count twice
	if b.ActiveCalls() != 0 || len(ds.list()) != 0 {
		t.Fatalf("after BYE: b=%d, %d dialogs", b.ActiveCalls(), len(ds.list()))
	}
}

func TestDialogSweepEndsCallsWithoutBye(t *testing.T) {
	disp, err := dispatcher.New([]dispatcher.Spec{{SetID: 1, URI: "sip:127.0.0.1:5070"}}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := disp.Find(1, "sip:127.0.0.1:5070")
	ds := newDialogs(newMetrics(prometheus.NewRegistry()))
	ds.begin("lost-bye").assign(dst)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ds.sweep(ctx, 40*time.Millisecond)
	deadline := time.Now().Add(2 * time.Second)
	for len(ds.list()) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(ds.list()) != 0 || dst.ActiveCalls() != 0 {
		t.Fatalf("call past max duration still tracked: %d dialogs, %d calls", len(ds.list()), dst.ActiveCalls())
	}
}
