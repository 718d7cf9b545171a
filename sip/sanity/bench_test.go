package sanity

import (
	"strconv"
	"strings"
	"testing"
)

// invite is a typical INVITE with SDP from a softphone, about 900 octets.
func invite() []byte {
	sdp := strings.Join([]string{
		"v=0",
		"o=alice 2890844526 2890844526 IN IP4 192.0.2.101",
		"s=-",
		"c=IN IP4 192.0.2.101",
		"t=0 0",
		"m=audio 49170 RTP/AVP 0 8 101",
		"a=rtpmap:0 PCMU/8000",
		"a=rtpmap:8 PCMA/8000",
		"a=rtpmap:101 telephone-event/8000",
		"a=fmtp:101 0-15",
		"a=ptime:20",
		"a=sendrecv",
		"",
	}, "\r\n")
	head := strings.Join([]string{
		"INVITE sip:2001@callcenter.example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK-524287-1---d8754z-;rport",
		"Max-Forwards: 70",
		"Contact: <sip:alice@192.0.2.101:5060;transport=udp>",
		"To: <sip:2001@callcenter.example.com>",
		"From: \"Alice Example\" <sip:alice@example.com>;tag=9fxced76sl",
		"Call-ID: 3848276298220188511@192.0.2.101",
		"CSeq: 1 INVITE",
		"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
		"Content-Type: application/sdp",
		"Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri",
		"User-Agent: Example Softphone 5.1.2 rv2.10.11.4",
		"Allow-Events: presence, kpml, talk",
		"Content-Length: " + strconv.Itoa(len(sdp)),
		"", "",
	}, "\r\n")
	return []byte(head + sdp)
}

func BenchmarkDatagram(b *testing.B) {
	data := invite()
	if v := Datagram(data, 65535); v.Action != Accept {
		b.Fatal(v)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		Datagram(data, 65535)
	}
}
