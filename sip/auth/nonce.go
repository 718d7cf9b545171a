package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"time"
)

const (
	issuedLen = 8
	randomLen = 8
	// tagLen truncates HMAC-SHA256 to 128 bits (RFC 2104 §5 allows down to half the output):
	// forging still needs 2^128 tries, and the nonce stays short enough for every phone.
	tagLen   = 16
	rawLen   = issuedLen + randomLen + tagLen
	nonceLen = (rawLen*8 + 5) / 6 // unpadded base64
)

// nonceKey identifies a nonce in the nc table: issued || random.
type nonceKey [issuedLen + randomLen]byte

func issuedOf(k nonceKey) int64 { return int64(binary.BigEndian.Uint64(k[:issuedLen])) }

var nonceEncoding = base64.RawURLEncoding.Strict()

func (a *Authenticator) newNonce(now time.Time) string {
	var raw [rawLen]byte
	binary.BigEndian.PutUint64(raw[:issuedLen], uint64(now.UnixNano()))
	_, _ = rand.Read(raw[issuedLen : issuedLen+randomLen])
	a.hmacTag(raw[issuedLen+randomLen:], (*[issuedLen + randomLen]byte)(raw[:issuedLen+randomLen]))
	return nonceEncoding.EncodeToString(raw[:])
}

// openNonce checks that s is a nonce we issued and returns its key and issue time.
func (a *Authenticator) openNonce(s string) (nonceKey, int64, bool) {
	var key nonceKey
	var raw [rawLen]byte
	if len(s) != nonceLen || !decodeBase64URL(raw[:], s) {
		return key, 0, false
	}
	var tag [tagLen]byte
	a.hmacTag(tag[:], (*[issuedLen + randomLen]byte)(raw[:issuedLen+randomLen]))
	if subtle.ConstantTimeCompare(tag[:], raw[issuedLen+randomLen:]) != 1 {
		return key, 0, false
	}
	copy(key[:], raw[:])
	return key, issuedOf(key), true
}

// decodeBase64URL decodes unpadded base64url s into dst, which must be exactly the decoded
// length, refusing non-canonical trailing bits. It exists because base64's decoders take
// []byte, and converting the 43-octet nonce would allocate on every request.
func decodeBase64URL(dst []byte, s string) bool {
	var acc uint32
	bits, n := 0, 0
	for i := 0; i < len(s); i++ {
		v := b64val(s[i])
		if v > 63 {
			return false
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			if n == len(dst) {
				return false
			}
			dst[n] = byte(acc >> bits)
			n++
		}
	}
	return n == len(dst) && acc&(1<<bits-1) == 0
}

func b64val(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	case c == '_':
		return 63
	}
	return 0xff
}
