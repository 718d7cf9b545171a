package registrar

import (
	"math"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// splitList splits a header value on the commas that separate its values, leaving commas
// inside quoted strings and <...> alone (a Path URI may carry a quoted display name or
// escaped commas in parameters).
func splitList(s string) []string {
	var out []string
	inQuote, inAngle, escaped := false, false, false
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case inQuote && c == '\\':
			escaped = true
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '<':
			inAngle = true
		case c == '>':
			inAngle = false
		case c == ',' && !inAngle:
			if v := strings.TrimSpace(s[start:i]); v != "" {
				out = append(out, v)
			}
			start = i + 1
		}
	}
	if v := strings.TrimSpace(s[start:]); v != "" {
		out = append(out, v)
	}
	return out
}

// headerValues returns the comma-separated values of every header with one of the given
// names. sipgo leaves headers it does not parse under the name as received, so compact
// forms have to be asked for explicitly.
func headerValues(req *gosip.Request, names ...string) []string {
	var out []string
	for _, h := range req.Headers() {
		for _, n := range names {
			if strings.EqualFold(h.Name(), n) {
				out = append(out, splitList(h.Value())...)
				break
			}
		}
	}
	return out
}

// supports reports whether the request lists an option tag in Supported (compact form k).
func supports(req *gosip.Request, tag string) bool {
	for _, v := range headerValues(req, "Supported", "k") {
		if strings.EqualFold(v, tag) {
			return true
		}
	}
	return false
}

// parseDelta parses RFC 3261 delta-seconds. Values past 2^32-1 are clamped to it, as
// §20.19 allows; ok is false when the text is not digits at all.
func parseDelta(s string) (secs uint32, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < math.MaxUint32 {
			n = n*10 + uint64(c-'0')
		}
	}
	return uint32(min(n, math.MaxUint32)), true
}

// parseQ parses an RFC 3261 qvalue, "0" ["." 0*3DIGIT] / "1" ["." 0*3"0"], into thousandths.
func parseQ(s string) (uint16, bool) {
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	whole := uint16(s[0] - '0')
	rest := s[1:]
	if rest == "" {
		return whole * 1000, true
	}
	if rest[0] != '.' || len(rest) > 4 {
		return 0, false
	}
	var frac uint16
	scale := uint16(100)
	for i := 1; i < len(rest); i++ {
		c := rest[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		frac += uint16(c-'0') * scale
		scale /= 10
	}
	if whole == 1 && frac != 0 {
		return 0, false
	}
	return whole*1000 + frac, true
}

// parseRegID parses an RFC 5626 reg-id: 1 to 2^31-1.
func parseRegID(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > math.MaxInt32 {
		return 0, false
	}
	return n, true
}

// instanceID extracts the instance-id from a +sip.instance value, which RFC 5626 sends as
// "<urn:...>" (quoted, in angle brackets). Unquoted or bracket-less values are accepted:
// the identity is what matters, not its dressing.
func instanceID(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' {
		v = v[1 : len(v)-1]
	}
	return strings.TrimSpace(v)
}

// pathURI parses the URI out of one Path value ("<sip:edge;lr;ob>" or a bare URI).
func pathURI(v string) (gosip.Uri, bool) {
	var u gosip.Uri
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return u, false
		}
		v = v[i+1 : i+j]
	}
	return u, gosip.ParseUri(strings.TrimSpace(v), &u) == nil
}
