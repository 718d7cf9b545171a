package dispatcher

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		name string
		list string
		want []Spec
	}{
		{
			name: "realistic kamailio list",
			list: `# dispatcher.list for the FreeSWITCH cluster
# setid destination flags priority attrs

1 sip:127.0.0.1:5070 0 0 weight=50;maxload=200;duid=fs1
1 sip:127.0.0.1:5072 0 0 weight=25;rweight=10;duid=fs2 FreeSWITCH two, in rack B
	# an indented comment

2 sip:[::1]:5080;transport=tcp 8 10
2	sips:fs3.example.com	1	5	duid=fs3;socket=udp:10.0.0.1:5060;unknown
3 sip:10.0.0.9
3 sip:fs4.example.com:5090;transport=tls 4
3 sip:fs5.example.com 0 -2
`,
			want: []Spec{
				{SetID: 1, URI: "sip:127.0.0.1:5070", Weight: 50, MaxLoad: 200, DUID: "fs1"},
				{SetID: 1, URI: "sip:127.0.0.1:5072", Weight: 25, RWeight: 10, DUID: "fs2"},
				{SetID: 2, URI: "sip:[::1]:5080;transport=tcp", Flags: 8, Priority: 10},
				{SetID: 2, URI: "sips:fs3.example.com", Flags: 1, Priority: 5, DUID: "fs3"},
				{SetID: 3, URI: "sip:10.0.0.9"},
				{SetID: 3, URI: "sip:fs4.example.com:5090;transport=tls", Flags: 4},
				{SetID: 3, URI: "sip:fs5.example.com", Priority: -2},
			},
		},
		{
			name: "CRLF line endings and no final newline",
			list: "# windows editor\r\n1 sip:10.0.0.1 0 0 weight=3\r\n\r\n1 sip:10.0.0.2",
			want: []Spec{
				{SetID: 1, URI: "sip:10.0.0.1", Weight: 3},
				{SetID: 1, URI: "sip:10.0.0.2"},
			},
		},
		{
			name: "empty attrs and trailing semicolons",
			list: "0 sip:a.example.com 0 0 ;;maxload=5;\n",
			want: []Spec{{SetID: 0, URI: "sip:a.example.com", MaxLoad: 5}},
		},
		{name: "only comments", list: "# nothing\n\n   \n#1 sip:10.0.0.1\n", want: nil},
		{name: "empty", list: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseList(strings.NewReader(tt.list))
			if err != nil {
				t.Fatalf("ParseList: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d specs %+v, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				// Origin points errors at the list line; every parsed spec must have one.
				if !strings.HasPrefix(got[i].Origin, "line ") {
					t.Errorf("spec %d has origin %q, want \"line N\"", i, got[i].Origin)
				}
				got[i].Origin = ""
				if got[i] != tt.want[i] {
					t.Errorf("spec %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
			// Whatever parses must also build: the list above is one an operator would ship.
			if _, err := build(got); err != nil {
				t.Errorf("build: %v", err)
			}
		})
	}
}

func TestParseListBadLines(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string // fragment of the line's error
	}{
		{"missing uri", "1", "want \"setid uri"},
		{"missing uri with spaces", "  7   ", "want \"setid uri"},
		{"non-numeric set", "one sip:10.0.0.1", `set id "one"`},
		{"negative set", "-1 sip:10.0.0.1", `set id "-1"`},
		{"non-numeric flags", "1 sip:10.0.0.1 x", `flags "x"`},
		{"non-numeric priority", "1 sip:10.0.0.1 0 high", `priority "high"`},
		{"bad weight", "1 sip:10.0.0.1 0 0 weight=heavy", `weight="heavy"`},
		{"empty weight", "1 sip:10.0.0.1 0 0 weight=", `weight=""`},
		{"bad rweight", "1 sip:10.0.0.1 0 0 rweight=1.5", `rweight="1.5"`},
		{"bad maxload", "1 sip:10.0.0.1 0 0 duid=a;maxload=lots", `maxload="lots"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseList(strings.NewReader("# header\n" + tt.line + "\n1 sip:10.0.0.9\n"))
			if err == nil {
				t.Fatalf("ParseList(%q) accepted a bad line", tt.line)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "line 2: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q: want it to start with \"line 2: \" and contain %q", msg, tt.want)
			}
		})
	}

	t.Run("all bad lines in one error", func(t *testing.T) {
		list := strings.Join([]string{
			"# setid uri flags priority attrs", // 1
			"1 sip:10.0.0.1 0 0 weight=50",     // 2 good
			"1",                                // 3 missing uri
			"",                                 // 4
			"x sip:10.0.0.2",                   // 5 set
			"1 sip:10.0.0.3 y",                 // 6 flags
			"1 sip:10.0.0.4 0 z",               // 7 priority
			"2 sip:10.0.0.5 0 0 weight=w",      // 8 weight
			"2 sip:10.0.0.6",                   // 9 good
		}, "\n")
		_, err := ParseList(strings.NewReader(list))
		if err == nil {
			t.Fatal("ParseList accepted a list with five bad lines")
		}
		multi, ok := err.(interface{ Unwrap() []error })
		if !ok {
			t.Fatalf("error %T is not a joined error", err)
		}
		var lines []string
		for _, e := range multi.Unwrap() {
			head, _, _ := strings.Cut(e.Error(), ":")
			lines = append(lines, head)
		}
		want := []string{"line 3", "line 5", "line 6", "line 7", "line 8"}
		if strings.Join(lines, ",") != strings.Join(want, ",") {
			t.Errorf("reported %q, want %q (full error: %v)", lines, want, err)
		}
	})

	t.Run("read error is reported", func(t *testing.T) {
		boom := errors.New("disk on fire")
		_, err := ParseList(iotest.ErrReader(boom))
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want it to wrap %v", err, boom)
		}
	})
}

func TestBuildValidation(t *testing.T) {
	tests := []struct {
		name  string
		specs []Spec
		want  []string // fragments that must all appear; none: the specs are valid
	}{
		{name: "no scheme", specs: []Spec{{SetID: 1, URI: "10.0.0.1"}}, want: []string{"not a SIP URI"}},
		{name: "host:port without scheme", specs: []Spec{{SetID: 1, URI: "10.0.0.1:5060"}}, want: []string{"is not sip or sips"}},
		{name: "http scheme", specs: []Spec{{SetID: 1, URI: "http://fs1.example.com:80"}}, want: []string{`scheme "http"`}},
		{name: "tel scheme", specs: []Spec{{SetID: 1, URI: "tel:+15551234"}}, want: []string{`scheme "tel"`}},
		{name: "port zero", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1:0"}}, want: []string{`bad port "0"`}},
		{name: "port too big", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1:65536"}}, want: []string{`bad port "65536"`}},
		{name: "port not a number", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1:sip"}}, want: []string{`bad port "sip"`}},
		{name: "empty port", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1:"}}, want: []string{`bad port ""`}},
		{name: "ipv6 bad port", specs: []Spec{{SetID: 1, URI: "sip:[::1]:99999"}}, want: []string{"bad port"}},
		{name: "ipv6 unterminated", specs: []Spec{{SetID: 1, URI: "sip:[::1:5060"}}, want: []string{"unterminated"}},
		{name: "ipv6 junk after bracket", specs: []Spec{{SetID: 1, URI: "sip:[::1]5060"}}, want: []string{"bad host:port"}},
		{name: "unbracketed ipv6", specs: []Spec{{SetID: 1, URI: "sip:2001:db8::1"}}, want: []string{"bad port"}},
		{name: "empty host", specs: []Spec{{SetID: 1, URI: "sip:"}}, want: []string{"empty host"}},
		{name: "empty host with params", specs: []Spec{{SetID: 1, URI: "sip:;transport=tcp"}}, want: []string{"empty host"}},
		{name: "empty host with user", specs: []Spec{{SetID: 1, URI: "sip:fs@"}}, want: []string{"empty host"}},
		{name: "empty host with port", specs: []Spec{{SetID: 1, URI: "sip::5060"}}, want: []string{"empty host"}},
		{name: "empty ipv6 host", specs: []Spec{{SetID: 1, URI: "sip:[]:5060"}}, want: []string{"empty host"}},
		{name: "unsupported transport sctp", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1;transport=sctp"}}, want: []string{`transport "sctp" not supported`}},
		{name: "unsupported transport ws", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1:8080;transport=ws"}}, want: []string{`transport "ws" not supported`}},
		{name: "sips over udp", specs: []Spec{{SetID: 1, URI: "sips:10.0.0.1;transport=udp"}}, want: []string{"sips"}},
		{
			name:  "duplicate in a set",
			specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1"}, {SetID: 1, URI: "sip:10.0.0.2"}, {SetID: 1, URI: "sip:10.0.0.1"}},
			want:  []string{"destination 3: sip:10.0.0.1 appears twice in set 1"},
		},
		{
			name:  "same uri in two sets is fine",
			specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1"}, {SetID: 2, URI: "sip:10.0.0.1"}},
		},
		{name: "negative weight", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1", Weight: -1}}, want: []string{"must not be negative"}},
		{name: "negative rweight", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1", RWeight: -5}}, want: []string{"must not be negative"}},
		{name: "negative maxload", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1", MaxLoad: -1}}, want: []string{"must not be negative"}},
		{name: "unknown state", specs: []Spec{{SetID: 1, URI: "sip:10.0.0.1", State: "paused"}}, want: []string{`unknown destination state "paused"`}},
		{
			name: "every problem reported",
			specs: []Spec{
				{SetID: 1, URI: "http:x"},
				{SetID: 1, URI: "sip:10.0.0.1"},
				{SetID: 1, URI: "sip:10.0.0.2", Weight: -3},
				{SetID: 1, URI: "sip:10.0.0.3;transport=sctp"},
			},
			want: []string{"destination 1:", "destination 3 (sip:10.0.0.2)", "destination 4:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.specs, discard, nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("New rejected valid specs: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted %+v", tt.specs)
			}
			if d != nil {
				t.Errorf("New returned a dispatcher along with error %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestBuildDefaultsAndFlags(t *testing.T) {
	tests := []struct {
		spec      Spec
		host      string
		port      int
		transport string
		state     State
		weight    int
		rweight   int
	}{
		{Spec{URI: "sip:10.0.0.5"}, "10.0.0.5", 5060, "udp", Active, 1, 1},
		{Spec{URI: "sip:10.0.0.5:5070"}, "10.0.0.5", 5070, "udp", Active, 1, 1},
		{Spec{URI: "SIP:fs1.example.com"}, "fs1.example.com", 5060, "udp", Active, 1, 1},
		{Spec{URI: "sip:fs1.example.com;transport=tcp"}, "fs1.example.com", 5060, "tcp", Active, 1, 1},
		{Spec{URI: "sip:fs1.example.com;lr;Transport=TCP"}, "fs1.example.com", 5060, "tcp", Active, 1, 1},
		{Spec{URI: "sip:fs1.example.com;transport=tls"}, "fs1.example.com", 5061, "tls", Active, 1, 1},
		{Spec{URI: "sips:fs1.example.com"}, "fs1.example.com", 5061, "tls", Active, 1, 1},
		{Spec{URI: "sips:fs1.example.com:5081"}, "fs1.example.com", 5081, "tls", Active, 1, 1},
		// RFC 5630 3.1.3: transport=tcp on a sips URI still means TLS over TCP.
		{Spec{URI: "sips:fs1.example.com;transport=tcp"}, "fs1.example.com", 5061, "tls", Active, 1, 1},
		{Spec{URI: "sip:[::1]"}, "::1", 5060, "udp", Active, 1, 1},
		{Spec{URI: "sip:[::1]:5080;transport=tcp"}, "::1", 5080, "tcp", Active, 1, 1},
		{Spec{URI: "sip:gw@10.0.0.5:5062;transport=udp"}, "10.0.0.5", 5062, "udp", Active, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Weight: 50}, "10.0.0.5", 5060, "udp", Active, 50, 50},
		{Spec{URI: "sip:10.0.0.5", Weight: 50, RWeight: 7}, "10.0.0.5", 5060, "udp", Active, 50, 7},
		{Spec{URI: "sip:10.0.0.5", Flags: 1}, "10.0.0.5", 5060, "udp", Inactive, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 2}, "10.0.0.5", 5060, "udp", Active, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 4}, "10.0.0.5", 5060, "udp", Disabled, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 5}, "10.0.0.5", 5060, "udp", Disabled, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 8}, "10.0.0.5", 5060, "udp", Active, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 1, State: "draining"}, "10.0.0.5", 5060, "udp", Draining, 1, 1},
		{Spec{URI: "sip:10.0.0.5", Flags: 4, State: "draining"}, "10.0.0.5", 5060, "udp", Disabled, 1, 1},
		{Spec{URI: "sip:10.0.0.5", State: "Disabled"}, "10.0.0.5", 5060, "udp", Disabled, 1, 1},
	}
	for _, tt := range tests {
		name := tt.spec.URI
		if tt.spec.Flags != 0 || tt.spec.State != "" || tt.spec.Weight != 0 {
			name += "/" + tt.spec.State + "/" + tt.state.String()
		}
		t.Run(name, func(t *testing.T) {
			tt.spec.SetID = 4
			d := newTest(t, []Spec{tt.spec})
			dst := mustFind(t, d, 4, tt.spec.URI)
			if dst.Host != tt.host || dst.Port != tt.port || dst.Transport != tt.transport {
				t.Errorf("host/port/transport = %q/%d/%q, want %q/%d/%q",
					dst.Host, dst.Port, dst.Transport, tt.host, tt.port, tt.transport)
			}
			if got := dst.State(); got != tt.state {
				t.Errorf("state = %v, want %v", got, tt.state)
			}
			if dst.Weight != tt.weight || dst.RWeight != tt.rweight {
				t.Errorf("weight/rweight = %d/%d, want %d/%d", dst.Weight, dst.RWeight, tt.weight, tt.rweight)
			}
		})
	}

	t.Run("addr brackets ipv6", func(t *testing.T) {
		d := newTest(t, []Spec{{SetID: 1, URI: "sip:[2001:db8::5]"}, {SetID: 1, URI: "sip:10.0.0.1:5070"}})
		if got := mustFind(t, d, 1, "sip:[2001:db8::5]").Addr(); got != "[2001:db8::5]:5060" {
			t.Errorf("Addr = %q", got)
		}
		if got := mustFind(t, d, 1, "sip:10.0.0.1:5070").Addr(); got != "10.0.0.1:5070" {
			t.Errorf("Addr = %q", got)
		}
	})

	t.Run("sets sorted by id, destinations by priority", func(t *testing.T) {
		d := newTest(t, []Spec{
			{SetID: 9, URI: "sip:10.0.0.9"},
			{SetID: 2, URI: "sip:10.0.0.1", Priority: 1},
			{SetID: 2, URI: "sip:10.0.0.2", Priority: 30},
			{SetID: 2, URI: "sip:10.0.0.3", Priority: 1},
			{SetID: 2, URI: "sip:10.0.0.4", Priority: 5},
		})
		sets := d.Sets()
		if len(sets) != 2 || sets[0].ID != 2 || sets[1].ID != 9 {
			t.Fatalf("sets out of order: %v", sets)
		}
		want := "sip:10.0.0.2 sip:10.0.0.4 sip:10.0.0.1 sip:10.0.0.3" // equal priorities keep list order
		if got := strings.Join(uris(sets[0].Dests), " "); got != want {
			t.Errorf("set 2 order %q, want %q", got, want)
		}
	})
}

func TestParseState(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want State
		ok   bool
	}{
		{"", Active, true}, {"active", Active, true}, {"INACTIVE", Inactive, true},
		{"Draining", Draining, true}, {"disabled", Disabled, true}, {"drain", Active, false},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseState(tt.in)
			if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
				t.Errorf("ParseState(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
			if tt.ok && got.String() != strings.ToLower(tt.want.String()) {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
	if got := State(42).String(); got != "unknown" {
		t.Errorf("State(42).String() = %q", got)
	}
}
