package sanity

import (
	"strings"
	"testing"

	gosip "github.com/emiago/sipgo/sip"
)

const offer = "INVITE sip:1000@gw.example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a1\r\n" +
	"From: <sip:agent@example.com>;tag=f1\r\n" +
	"To: <sip:1000@gw.example.com>%s\r\n" +
	"Call-ID: answer-1@example.com\r\n" +
	"CSeq: 7 INVITE\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Length: 0\r\n\r\n"

func TestInitialInvite(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want bool
	}{
		{"new call", strings.Replace(offer, "%s", "", 1), true},
		{"re-INVITE in a dialog", strings.Replace(offer, "%s", ";tag=t9", 1), false},
		{"compact To without tag", strings.Replace(strings.Replace(offer, "%s", "", 1), "To:", "t:", 1), true},
		{"compact To with tag", strings.Replace(strings.Replace(offer, "%s", ";tag=x", 1), "To:", "t:", 1), false},
		{"not an INVITE", strings.Replace(strings.Replace(offer, "%s", "", 1), "INVITE sip", "OPTIONS sip", 1), false},
		{"a response", "SIP/2.0 200 OK\r\nTo: <sip:a@b>\r\n\r\n", false},
		{"no To at all", "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InitialInvite([]byte(tt.msg)); got != tt.want {
				t.Errorf("InitialInvite = %v, want %v", got, tt.want)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { InitialInvite([]byte(offer)) }); n != 0 {
		t.Errorf("InitialInvite allocates %v times per call; it runs on every datagram", n)
	}
}

func TestAnswer(t *testing.T) {
	req := []byte(strings.Replace(offer, "%s", "", 1))
	resp := Answer(req, 503, "Overloaded", "Retry-After: 5")
	if resp == nil {
		t.Fatal("no answer formed")
	}
	msg, err := gosip.NewParser().ParseSIP(resp)
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, resp)
	}
	res := msg.(*gosip.Response)
	if res.StatusCode != 503 || res.Reason != "Overloaded" {
		t.Errorf("status %d %q", res.StatusCode, res.Reason)
	}
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() != "5" {
		t.Errorf("Retry-After = %v", h)
	}
	if res.CallID().Value() != "answer-1@example.com" || res.CSeq().SeqNo != 7 || !res.To().Params.Has("tag") {
		t.Errorf("answer does not match the request: %s", resp)
	}
	// Stateless: a retransmission gets the very same answer, To tag included.
	if again := Answer(req, 503, "Overloaded", "Retry-After: 5"); string(again) != string(resp) {
		t.Error("a retransmitted request got a different answer")
	}
	if Answer([]byte("SIP/2.0 200 OK\r\n\r\n"), 503, "Overloaded") != nil {
		t.Error("answered a response")
	}
}

func TestUserAgent(t *testing.T) {
	req := []byte("OPTIONS sip:100@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nuser-agent :  friendly-scanner \r\nCall-ID: x\r\n\r\n")
	if got := string(UserAgent(req)); got != "friendly-scanner" {
		t.Errorf("UserAgent = %q, want friendly-scanner (case-insensitive name, trimmed value)", got)
	}
	if got := UserAgent([]byte("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nUser-Agent: in-body\r\n")); got != nil {
		t.Errorf("a User-Agent in the body was read: %q", got)
	}
	res := []byte("SIP/2.0 200 OK\r\nUser-Agent: x\r\n\r\n")
	if UserAgent(res) != nil || !IsResponse(res) || IsResponse(req) {
		t.Error("responses have no User-Agent to judge and must be told apart from requests")
	}
}
