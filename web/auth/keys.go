package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"path/filepath"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits refuses RSA keys that are factorable today or soon.
const minRSABits = 2048

// pubKey is one verification key bound to the single algorithm it may check. Binding at load
// time (from the key's type, never from a token) is what rules out algorithm confusion.
type pubKey struct {
	kid string
	alg string // RS256, ES256 or EdDSA
	key jwt.VerificationKey
}

// keySet is immutable once built; a JWKS refresh swaps in a new one.
type keySet struct {
	byKid map[string]pubKey
	// byAlg serves tokens without a kid: they are tried against every key of their algorithm.
	byAlg map[string][]jwt.VerificationKey
	n     int
}

func newKeySet(keys []pubKey) (*keySet, error) {
	ks := &keySet{byKid: map[string]pubKey{}, byAlg: map[string][]jwt.VerificationKey{}, n: len(keys)}
	for _, k := range keys {
		if k.kid != "" {
			if _, dup := ks.byKid[k.kid]; dup {
				return nil, fmt.Errorf("kid %q names two keys", k.kid)
			}
			ks.byKid[k.kid] = k
		}
		ks.byAlg[k.alg] = append(ks.byAlg[k.alg], k.key)
	}
	return ks, nil
}

// algForKey derives the one algorithm a public key may verify, and refuses weak keys.
func algForKey(key any) (string, jwt.VerificationKey, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return "", nil, fmt.Errorf("RSA key of %d bits: at least %d", k.N.BitLen(), minRSABits)
		}
		return AlgRS256, k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", nil, fmt.Errorf("ECDSA key on %s: only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return AlgES256, k, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", nil, errors.New("Ed25519 key of the wrong size")
		}
		return AlgEdDSA, k, nil
	default:
		return "", nil, fmt.Errorf("unsupported key type %T", key)
	}
}

// loadPEMFiles reads one public key per file. A key whose algorithm is not in algs is an error:
// it is a config that cannot do what it says.
func loadPEMFiles(files []string, algs []string) ([]pubKey, error) {
	var keys []pubKey
	var errs []error
	kids := map[string]string{}
	for _, path := range files {
		base := filepath.Base(path)
		kid := strings.TrimSuffix(base, filepath.Ext(base))
		k, err := loadPEMFile(path, kid)
		if err != nil {
			errs = append(errs, fmt.Errorf("public_key_files %s: %w", path, err))
			continue
		}
		if algs != nil && !slices.Contains(algs, k.alg) {
			errs = append(errs, fmt.Errorf("public_key_files %s: an %s key, but algorithms do not allow %s", path, k.alg, k.alg))
			continue
		}
		if other, dup := kids[kid]; dup {
			errs = append(errs, fmt.Errorf("public_key_files %s and %s: both give kid %q", other, path, kid))
			continue
		}
		kids[kid] = path
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

func loadPEMFile(path, kid string) (pubKey, error) {
	data, err := readLimited(path)
	if err != nil {
		return pubKey{}, err
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return pubKey{}, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return pubKey{}, errors.New("more than one PEM block; give one key per file")
	}
	var key any
	switch {
	case block.Type == "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case block.Type == "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return pubKey{}, errors.New("holds a private key; the gateway needs only the public key")
	default:
		return pubKey{}, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return pubKey{}, err
	}
	alg, vk, err := algForKey(key)
	if err != nil {
		return pubKey{}, err
	}
	return pubKey{kid: kid, alg: alg, key: vk}, nil
}

// jwk holds the members of RFC 7517/7518 keys that matter here. D and the RSA private members
// are read only to refuse keys that expose them.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d"`
	P      string   `json:"p"`
}

func loadJWKSFile(path string, algs []string, log *slog.Logger) ([]pubKey, error) {
	data, err := readLimited(path)
	if err != nil {
		return nil, fmt.Errorf("jwks_file %s: %w", path, err)
	}
	keys, err := parseJWKS(data, algs, log)
	if err != nil {
		return nil, fmt.Errorf("jwks_file %s: %w", path, err)
	}
	return keys, nil
}

// parseJWKS keeps the signature keys usable with algs and skips the rest: an IdP's document
// commonly carries encryption keys and algorithms we do not allow. Symmetric ("oct") keys are
// never taken from a JWKS; a shared secret has no business in a published document. A
// document with no usable key, or two usable keys under one kid, is an error.
func parseJWKS(data []byte, algs []string, log *slog.Logger) ([]pubKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %v", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JWKS document: no "keys" array`)
	}
	skip := func(i int, kid, why string) {
		if log != nil {
			log.Debug("jwks key ignored", "index", i, "kid", kid, "reason", why)
		}
	}
	var keys []pubKey
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skip(i, "", "not a JWK object")
			continue
		}
		if j.Use != "" && j.Use != "sig" {
			skip(i, j.Kid, "use is "+j.Use)
			continue
		}
		if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
			skip(i, j.Kid, "key_ops lacks verify")
			continue
		}
		if j.D != "" || j.P != "" {
			if log != nil {
				log.Warn("jwks key carries private key material; ignored", "kid", j.Kid)
			}
			continue
		}
		key, err := j.publicKey()
		if err != nil {
			skip(i, j.Kid, err.Error())
			continue
		}
		alg, vk, err := algForKey(key)
		if err != nil {
			skip(i, j.Kid, err.Error())
			continue
		}
		if j.Alg != "" && j.Alg != alg {
			skip(i, j.Kid, "alg "+j.Alg+" is not supported")
			continue
		}
		if algs != nil && !slices.Contains(algs, alg) {
			skip(i, j.Kid, alg+" is not in algorithms")
			continue
		}
		keys = append(keys, pubKey{kid: j.Kid, alg: alg, key: vk})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("none of its %d keys is a signature key for the allowed algorithms", len(doc.Keys))
	}
	if _, err := newKeySet(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func (j jwk) publicKey() (any, error) {
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N)
		if err != nil || len(n) == 0 {
			return nil, errors.New("bad RSA n")
		}
		e, err := b64(j.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA e")
		}
		ev := new(big.Int).SetBytes(e).Int64()
		if ev < 3 || ev%2 == 0 || ev > 1<<31-1 {
			return nil, errors.New("bad RSA e")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev)}, nil
	case "EC":
		if j.Crv != "P-256" {
			return nil, fmt.Errorf("EC curve %q is not supported", j.Crv)
		}
		x, errX := b64(j.X)
		y, errY := b64(j.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("bad EC coordinates")
		}
		// The uncompressed-point parser also checks the point is on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("OKP curve %q is not supported", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 x")
		}
		return ed25519.PublicKey(x), nil
	case "oct":
		return nil, errors.New("symmetric keys are not taken from a JWKS")
	default:
		return nil, fmt.Errorf("kty %q is not supported", j.Kty)
	}
}

// b64 accepts base64url with or without padding: RFC 7518 says unpadded, some IdPs pad.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
