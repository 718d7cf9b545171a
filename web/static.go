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
	"strconv"
	"strings"
)

// staticAsset is one embedded file, prepared once at start: its type, and its bytes as they
// are and gzipped when that is smaller. The header values are made here too, so a request only
// assigns them (see hvCSP for why sharing them is safe).
type staticAsset struct {
	contentType []string
	plain, gz   *staticBody // gz is nil when compressing does not pay
}

// staticBody is one representation of a file. Each has its own strong ETag (RFC 9110 §8.8.3:
// the gzip bytes are not the plain bytes), so a cache holding one never validates the other.
type staticBody struct {
	data                []byte
	contentLength, etag []string
}

var (
	hvNoCache        = []string{"no-cache"}
	hvAcceptEncoding = []string{"Accept-Encoding"}
	hvGzip           = []string{"gzip"}
)

func newStaticBody(b []byte, etag string) *staticBody {
	return &staticBody{data: b, contentLength: []string{strconv.Itoa(len(b))}, etag: []string{etag}}
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
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = http.DetectContentType(body)
		}
		tag := hex.EncodeToString(sum[:12])
		a := &staticAsset{contentType: []string{ctype}, plain: newStaticBody(body, `"`+tag+`"`)}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if buf.Len() < len(body)*9/10 {
			a.gz = newStaticBody(buf.Bytes(), `"`+tag+`-gz"`)
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
	h["Content-Type"] = a.contentType
	body := a.plain
	if a.gz != nil && acceptsGzip(r) {
		body = a.gz
	}
	h["Etag"] = body.etag
	// Names are not content-hashed, so browsers revalidate every time; the ETag makes that a 304.
	h["Cache-Control"] = hvNoCache
	h["Vary"] = hvAcceptEncoding
	if match := r.Header["If-None-Match"]; len(match) > 0 && strings.Contains(match[0], body.etag[0]) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if body == a.gz {
		h["Content-Encoding"] = hvGzip
	}
	h["Content-Length"] = body.contentLength
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	// The whole response in one write (see batchConn), as nginx sends a file.
	if n := len(body.data); n >= minBatch && n <= maxBatch {
		if bc := batchConnOf(r); bc != nil {
			bc.hold()
			defer bc.release()
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body.data)
			_ = http.NewResponseController(w).Flush()
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body.data)
}

// acceptsGzip reports whether the request's (first) Accept-Encoding lists gzip with a
// q-value other than q=0.
func acceptsGzip(r *http.Request) bool {
	v := r.Header["Accept-Encoding"]
	if len(v) == 0 {
		return false
	}
	return acceptsGzipValue(v[0])
}

// acceptsGzipValue reports whether one Accept-Encoding value lists gzip with a q-value other
// than q=0.
func acceptsGzipValue(rest string) bool {
	for {
		part, more, found := strings.Cut(rest, ",")
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
		if !found {
			return false
		}
		rest = more
	}
}
