package auth

import (
	"fmt"
	"testing"
)

// benchVerify measures the accepted path. Every (nonce, nc) pair passes only once, so
// credentials are built in untimed batches: 64 fresh nonces with nc 1..64 each, which
// exercises both the first use of a nonce (map insert) and later uses (update).
func benchVerify(b *testing.B, alg string) {
	f := newFixture(b, Config{MaxNonces: 1 << 20})
	// A store returns stored hashes; computing them here would bill the test's work to Verify.
	f.a.creds = hashes{"alice/" + alg: alice.ha1(alg)}
	const nonces, perNonce = 64, 64
	batch := make([]string, 0, nonces*perNonce)
	refill := func() {
		batch = batch[:0]
		ns := make([]string, nonces)
		for i := range ns {
			ns[i] = f.nonce(b)
		}
		for nc := 1; nc <= perNonce; nc++ {
			for _, n := range ns {
				batch = append(batch, cred{alg: alg, user: "alice", pass: "s3cret", nonce: n,
					uri: "sip:2001@callcenter.example.com", method: "INVITE", nc: fmt.Sprintf("%08x", nc),
					cnonce: "6c0d1bfa3e0f5b2a"}.build())
			}
		}
	}
	refill()
	vals := make([]string, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%len(batch) == 0 && i > 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		vals[0] = batch[i%len(batch)]
		if res := f.a.Verify("INVITE", vals, srcA); res.Status != OK {
			b.Fatalf("%v %q", res.Status, res.Reason)
		}
	}
}

func BenchmarkVerifyMD5(b *testing.B)    { benchVerify(b, "MD5") }
func BenchmarkVerifySHA256(b *testing.B) { benchVerify(b, "SHA-256") }

// BenchmarkVerifyBadNonce is the cost of a flood with made-up nonces: parse and one HMAC.
func BenchmarkVerifyBadNonce(b *testing.B) {
	f := newFixture(b, Config{})
	vals := []string{cred{user: "alice", pass: "x", nonce: tamper(b, f.nonce(b), 20)}.build()}
	b.ReportAllocs()
	for b.Loop() {
		if f.a.Verify("INVITE", vals, srcA).Status != Unproven {
			b.Fatal("not unproven")
		}
	}
}

// BenchmarkVerifyOtherSource is the cost of a spoofed answer on a real nonce issued to
// another address: the same parse and one HMAC, no credential lookup.
func BenchmarkVerifyOtherSource(b *testing.B) {
	f := newFixture(b, Config{})
	vals := []string{cred{user: "alice", pass: "x", nonce: f.nonce(b)}.build()}
	b.ReportAllocs()
	for b.Loop() {
		if f.a.Verify("INVITE", vals, srcB).Status != Unproven {
			b.Fatal("not unproven")
		}
	}
}

func BenchmarkChallenge(b *testing.B) {
	f := newFixture(b, Config{})
	b.ReportAllocs()
	for b.Loop() {
		f.a.Challenge(false, srcA)
	}
}

type hashes map[string]string

func (h hashes) HA1(user, algorithm string) (string, bool) {
	v, ok := h[user+"/"+algorithm]
	return v, ok
}

func (u users) ha1(alg string) string { v, _ := u.HA1("alice", alg); return v }
