package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
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
	// bindingLen is the source prefix a nonce is bound to: a family octet and 16 address
	// octets. It is covered by the tag but never sent: the verifier recomputes it from the
	// address the response came from.
	bindingLen = 1 + 16
	macInLen   = issuedLen + randomLen + bindingLen
)

// nonceKey identifies a nonce in the nc table: issued || random.
type nonceKey [issuedLen + randomLen]byte

func issuedOf(k nonceKey) int64 { return int64(binary.BigEndian.Uint64(k[:issuedLen])) }

// binding is the source prefix a nonce was sent to, in the form the tag covers.
//
// Why bind at all: over UDP a source address costs nothing to forge, and digest failures
// feed per-source and per-user bans. With a nonce valid from anywhere, anyone could send
// wrong answers under a phone's (or an office NAT's) address and get it banned, or burn a
// user's per-user count, without ever receiving a challenge. Bound to where the challenge
// went, a nonce proves that whoever answers with it received our packet at that address,
// so only such answers are counted (Kamailio's auth module checks the nonce's source for
// the same reason).
//
// The prefix is the guard's unit of counting and banning: the IPv4 address, or the IPv6 /64,
// so a phone whose privacy address changes within its /64 keeps its nonce, and no one outside
// the /64 can answer for it. A client whose public address changes between challenge and
// answer (NAT rebinding) just gets one more challenge. The family octet keeps the invalid
// address (0), IPv4 (4) and the IPv6 ::/64 (6) apart; IPv4-mapped IPv6 counts as IPv4, as
// in the guard.
type binding [bindingLen]byte

func bindingOf(a netip.Addr) binding {
	var b binding
	a = a.Unmap()
	switch {
	case a.Is4():
		b[0] = 4
		v := a.As16()
		copy(b[1:], v[:])
	case a.Is6():
		b[0] = 6
		v := a.As16()
		copy(b[1:1+8], v[:8]) // the /64; the interface identifier stays zero
	}
	return b
}

var nonceEncoding = base64.RawURLEncoding.Strict()

// newNonce issues a nonce bound to dst, the address the challenge is sent to.
func (a *Authenticator) newNonce(now time.Time, dst netip.Addr) string {
	var raw [rawLen]byte
	binary.BigEndian.PutUint64(raw[:issuedLen], uint64(now.UnixNano()))
	_, _ = rand.Read(raw[issuedLen : issuedLen+randomLen])
	b := bindingOf(dst)
	a.hmacTag(raw[issuedLen+randomLen:], (*[issuedLen + randomLen]byte)(raw[:issuedLen+randomLen]), &b)
	return nonceEncoding.EncodeToString(raw[:])
}

// openNonce checks that s is a nonce we issued to src's prefix and returns its key and issue
// time. A forged nonce and one of ours sent to another prefix fail alike: the tag cannot
// tell them apart, and the caller must treat them alike anyway.
func (a *Authenticator) openNonce(s string, src netip.Addr) (nonceKey, int64, bool) {
	var key nonceKey
	var raw [rawLen]byte
	if len(s) != nonceLen || !decodeBase64URL(raw[:], s) {
		return key, 0, false
	}
	var tag [tagLen]byte
	b := bindingOf(src)
	a.hmacTag(tag[:], (*[issuedLen + randomLen]byte)(raw[:issuedLen+randomLen]), &b)
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
