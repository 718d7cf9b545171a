package auth

import (
	"errors"
	"strings"
)

// params holds the digest-response parameters we use, as substrings of the header value
// (unquoted strings are copied only when they contain escapes).
type params struct {
	has                                   uint32
	username, realm, nonce, uri, response string
	algorithm, cnonce, qop, nc, userhash  string
	unknown                               [maxParams]string
	nUnknown                              int
}

const (
	pUsername uint32 = 1 << iota
	pRealm
	pNonce
	pURI
	pResponse
	pAlgorithm
	pCnonce
	pQop
	pNC
	pUserhash
	pOpaque
)

// maxParams bounds the parameters in one value; a digest response has at most a dozen.
const maxParams = 24

var (
	errNotDigest  = errors.New("not digest")
	errSyntax     = errors.New("bad credentials syntax")
	errDuplicate  = errors.New("duplicate parameter")
	errTooMany    = errors.New("too many parameters")
	errEmptyValue = errors.New("empty parameter value")
)

// parse reads `Digest k=v, k="v", ...` (RFC 3261 §25.1 credentials). It is strict where
// ambiguity could be exploited (duplicates are refused rather than first- or last-wins, so
// we and any other element reading the header agree) and lenient where clients are known to
// differ (quoted or bare values for any parameter, empty list elements).
func parse(v string, p *params) error {
	i := skipLWS(v, 0)
	j := i
	for j < len(v) && isToken(v[j]) {
		j++
	}
	if !strings.EqualFold(v[i:j], "Digest") {
		return errNotDigest
	}
	if j < len(v) && !isLWS(v[j]) {
		return errNotDigest // e.g. "Digestive"
	}
	i = j
	n := 0
	for {
		i = skipLWS(v, i)
		if i == len(v) {
			break
		}
		if v[i] == ',' {
			i++
			continue
		}
		k := i
		for i < len(v) && isToken(v[i]) {
			i++
		}
		key := v[k:i]
		if key == "" {
			return errSyntax
		}
		i = skipLWS(v, i)
		if i == len(v) || v[i] != '=' {
			return errSyntax
		}
		i = skipLWS(v, i+1)
		var val string
		if i < len(v) && v[i] == '"' {
			var ok bool
			val, i, ok = unquote(v, i)
			if !ok {
				return errSyntax
			}
		} else {
			k := i
			for i < len(v) && isToken(v[i]) {
				i++
			}
			val = v[k:i]
			if val == "" {
				return errEmptyValue
			}
		}
		i = skipLWS(v, i)
		if i < len(v) && v[i] != ',' {
			return errSyntax
		}
		if n++; n > maxParams {
			return errTooMany
		}
		if err := p.set(key, val); err != nil {
			return err
		}
	}
	return nil
}

func (p *params) set(key, val string) error {
	var bit uint32
	var dst *string
	switch {
	case strings.EqualFold(key, "username"):
		bit, dst = pUsername, &p.username
	case strings.EqualFold(key, "realm"):
		bit, dst = pRealm, &p.realm
	case strings.EqualFold(key, "nonce"):
		bit, dst = pNonce, &p.nonce
	case strings.EqualFold(key, "uri"):
		bit, dst = pURI, &p.uri
	case strings.EqualFold(key, "response"):
		bit, dst = pResponse, &p.response
	case strings.EqualFold(key, "algorithm"):
		bit, dst = pAlgorithm, &p.algorithm
	case strings.EqualFold(key, "cnonce"):
		bit, dst = pCnonce, &p.cnonce
	case strings.EqualFold(key, "qop"):
		bit, dst = pQop, &p.qop
	case strings.EqualFold(key, "nc"):
		bit, dst = pNC, &p.nc
	case strings.EqualFold(key, "userhash"):
		bit, dst = pUserhash, &p.userhash
	case strings.EqualFold(key, "opaque"):
		bit = pOpaque // we never send one, so its value is irrelevant
	default:
		for _, u := range p.unknown[:p.nUnknown] {
			if strings.EqualFold(u, key) {
				return errDuplicate
			}
		}
		p.unknown[p.nUnknown] = key
		p.nUnknown++
		return nil
	}
	if p.has&bit != 0 {
		return errDuplicate
	}
	p.has |= bit
	if dst != nil {
		*dst = val
	}
	return nil
}

// unquote reads the quoted-string starting at v[i] == '"' (RFC 3261 §25.1) and returns its
// content and the index after the closing quote.
func unquote(v string, i int) (string, int, bool) {
	start := i + 1
	escaped := false
	for j := start; j < len(v); j++ {
		switch c := v[j]; {
		case c == '"':
			if !escaped {
				return v[start:j], j + 1, true
			}
			return unescape(v[start:j]), j + 1, true
		case c == '\\':
			j++
			if j == len(v) || v[j] == '\r' || v[j] == '\n' || v[j] > 0x7f {
				return "", 0, false
			}
			escaped = true
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", 0, false
		}
	}
	return "", 0, false
}

func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func skipLWS(v string, i int) int {
	for i < len(v) && isLWS(v[i]) {
		i++
	}
	return i
}

// isLWS: sipgo has already unfolded header lines, so only space and tab remain.
func isLWS(c byte) bool { return c == ' ' || c == '\t' }

// isToken reports RFC 3261 token characters.
func isToken(c byte) bool { return tokenChars[c] }

// tokenChars is a table because parse calls isToken for almost every octet it reads.
var tokenChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range []byte("-.!%*_+`'~") {
		t[c] = true
	}
	return t
}()
