package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Frames larger than the socket's 4 KiB buffers, both ways: a REGISTER whose Contact carries a
// long parameter, and its 200, which repeats the Contact. The agent socket reads and writes
// through the upgraded HTTP connection's buffers, and the bridge reads the router's stream in
// 4 KiB chunks (bench/ws-bench.sh: memory per idle agent), so both messages span several
// buffer fills on the way.
func TestBridgeLargeFrames(t *testing.T) {
	backend := freePort(t)
	gwPort := freePort(t)
	gw := startGateway(t, gwPort, edgeConfig(t, backend, "")+"bridge: {max_frame: 65535}\n")
	a := connectAgent(t, gw, "1001")
	long := strings.Repeat("x", 9000)
	a.send(fmt.Sprintf(`REGISTER sip:127.0.0.1 SIP/2.0
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKbig%d
Max-Forwards: 70
To: <sip:1001@127.0.0.1>
From: <sip:1001@127.0.0.1>;tag=big
Call-ID: big-%d
CSeq: 1 REGISTER
Contact: <sip:1001@df7jal23ls0d.invalid;transport=ws;pad=%s>;expires=600

`, time.Now().UnixNano(), time.Now().UnixNano(), long))
	res := a.expect("SIP/2.0 ", 3*time.Second)
	if !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("REGISTER with a %d-byte Contact: %.80q", len(long), res)
	}
	if len(res) < len(long) || !strings.Contains(res, "pad="+long) {
		t.Fatalf("the 200 (%d bytes) does not carry the whole Contact back", len(res))
	}
	// The socket still carries small messages after the large ones.
	if res := a.register("1001"); !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("REGISTER after the large frames: %.80q", res)
	}
}
