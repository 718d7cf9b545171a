package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

// staticAsset is one embedded file, prepared once at start: its type, a strong ETag from its
// content, and a gzip copy when that is smaller.
type staticAsset struct {
	body, gz    []byte
	contentType string
	etag        string
}

// staticFiles serves the embedded portals. The files never change while the process runs,
// so everything a request needs is computed up front and serving is a map lookup.
type staticFiles struct {
	assets map[string]*staticAsset // by URL path, e.g. /admin/admin.js and /admin/
}

func newStaticFiles(fsys fs.FS) (*staticFiles, error) {
	sf := &staticFiles{assets: map[string]*staticAsset{}}
	if fsys == nil {
		return sf, nil
	}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &staticAsset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`,
			contentType: mime.TypeByExtension(path.Ext(p))}
		if a.contentType == "" {
			a.contentType = http.DetectContentType(body)
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if buf.Len() < len(body)*9/10 {
			a.gz = buf.Bytes()
		}
		sf.assets["/"+p] = a
		if path.Base(p) == "index.html" {
			sf.assets["/"+path.Dir(p)+"/"] = a
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load static files: %w", err)
	}
	return sf, nil
}

func (sf *staticFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := sf.assets[r.URL.Path]
	if a == nil {
		writeJSONError(w, http.StatusNotFound, "not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	// Names are not content-hashed, so browsers revalidate every time; the ETag makes that a 304.
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Accept-Encoding")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := a.body
	if a.gz != nil && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		body = a.gz
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}
