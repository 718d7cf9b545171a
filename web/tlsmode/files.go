package tlsmode

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// fileCheckInterval is how often at most the handshakes look at the files' metadata.
const fileCheckInterval = 5 * time.Second

// fileCert serves the pair in CertFile/KeyFile, and swaps in a new pair when the files
// change: a handshake checks the files' metadata once the interval has passed, and Reload
// checks now. Only a pair that loads replaces the current one.
type fileCert struct {
	certFile, keyFile string
	log               *slog.Logger

	cur       atomic.Pointer[tls.Certificate]
	every     atomic.Int64 // the check interval, nanoseconds (tests shorten it)
	nextCheck atomic.Int64 // unix nanoseconds; handshakes before it do not look at the files

	mu      sync.Mutex // serialises checks and loads; guards the fields below
	loaded  pairStamp  // the files as they were when the current pair was read
	refused pairStamp  // the files of the last pair that did not load: not retried until they change
	lastErr string     // the last stat error logged, to log a missing file once
}

func newFileCert(certFile, keyFile string, log *slog.Logger) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, log: log}
	f.every.Store(int64(fileCheckInterval))
	st, err := statPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.install(cert, st)
	f.nextCheck.Store(time.Now().Add(fileCheckInterval).UnixNano())
	return f, nil
}

// getCertificate is tls.Config.GetCertificate: the current pair, re-read first if the
// files changed since the last look (at most once per interval, by one handshake at a time).
func (f *fileCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now()
	if now.UnixNano() >= f.nextCheck.Load() && f.mu.TryLock() {
		f.nextCheck.Store(now.Add(time.Duration(f.every.Load())).UnixNano())
		f.checkLocked()
		f.mu.Unlock()
	}
	return f.cur.Load(), nil
}

// checkLocked loads the pair if the files differ from both the current pair's and the last
// refused pair's.
func (f *fileCert) checkLocked() {
	st, err := statPair(f.certFile, f.keyFile)
	if err != nil {
		// Often a rotation caught half way; the next look will tell.
		if err.Error() != f.lastErr {
			f.lastErr = err.Error()
			f.log.Warn("tls certificate files unreadable, keeping the current certificate", "error", err)
		}
		return
	}
	f.lastErr = ""
	if st.same(f.loaded) || st.same(f.refused) {
		return
	}
	_ = f.loadLocked(st)
}

// reload is Provider.Reload: read the pair now, whatever the metadata says.
func (f *fileCert) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := statPair(f.certFile, f.keyFile)
	if err != nil {
		f.log.Error("tls certificate reload refused, keeping the current certificate", "error", err)
		return err
	}
	return f.loadLocked(st)
}

func (f *fileCert) loadLocked(st pairStamp) error {
	cert, err := loadPair(f.certFile, f.keyFile)
	if err != nil {
		f.refused = st
		f.log.Error("tls certificate reload refused, keeping the current certificate", "error", err)
		return err
	}
	f.refused = pairStamp{}
	f.install(cert, st)
	return nil
}

func (f *fileCert) install(cert *tls.Certificate, st pairStamp) {
	f.cur.Store(cert)
	f.loaded = st
	leaf := cert.Leaf
	f.log.Info("tls certificate loaded", "cert_file", f.certFile, "subject", leaf.Subject.String(),
		"dns_names", leaf.DNSNames, "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
}

// loadPair reads and checks a certificate and key: they must match, and the leaf must be
// current (an expired certificate would only make every client fail).
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s / key %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf // parsed by LoadX509KeyPair since Go 1.23
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tls certificate %s expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tls certificate %s is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// pairStamp is the metadata of both files: a change of inode (a rename or symlink swap, as
// certbot and Kubernetes do), modification time or size counts as a change.
type pairStamp struct{ cert, key os.FileInfo }

func statPair(certFile, keyFile string) (pairStamp, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return pairStamp{}, fmt.Errorf("tls certificate: %w", err)
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return pairStamp{}, fmt.Errorf("tls key: %w", err)
	}
	return pairStamp{cert: c, key: k}, nil
}

func (s pairStamp) same(o pairStamp) bool { return sameFile(s.cert, o.cert) && sameFile(s.key, o.key) }

func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}
