// Package web serves the browser page of AI Shell: a terminal built on
// xterm.js that signs in, opens or resumes a session through the session API
// and talks to the relay over the client socket of protocol.md.
//
// The page's own files live in static/ and are embedded in the binary. The
// xterm.js files in static/vendor/ are copied from node_modules by `make web`
// before the build; without that step the page loads but has no terminal.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// contentTypes fixes the types of the files the page is made of, so that
// they do not depend on the machine's mime.types, which differs between
// systems (for example for .js).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".json": "application/json",
	".map":  "application/json",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
}

// contentSecurityPolicy keeps the page to its own origin: no script, style
// or font comes from elsewhere. The socket may go to another host, since the
// session object's relayUrl names the relay, which need not be the host that
// served the page. xterm.js sets inline styles on its elements, hence
// 'unsafe-inline' for styles only.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; " +
	"style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// file is one embedded file, read once at start.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler returns the handler of the page: index.html at "/" and the page's
// files under their names (for example /app.js and /vendor/xterm.js). Any
// other path answers 404, as do folders. Every answer carries
// Cache-Control: no-cache with a strong ETag, so a browser revalidates after
// a new build and gets 304 otherwise.
func Handler() http.Handler {
	files, err := load(static, "static")
	if err != nil {
		// The files are embedded at build time; failing to read them is a
		// broken build, not a condition to handle at run time.
		panic("web: read embedded files: " + err.Error())
	}
	return &handler{files: files}
}

// load reads every regular file under root of fsys, keyed by its URL path.
func load(fsys fs.FS, root string) (map[string]file, error) {
	files := make(map[string]file)
	err := fs.WalkDir(fsys, root, func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		urlPath := strings.TrimPrefix(name, root)
		files[urlPath] = file{
			body:        body,
			contentType: contentType(name),
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	return files, err
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := contentTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}

type handler struct {
	files map[string]file // read-only after Handler returns
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	name := r.URL.Path
	if name == "/" {
		name = "/index.html"
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}

	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", f.etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if strings.HasSuffix(name, ".html") {
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	}
	// ServeContent handles If-None-Match and ranges; with no modification
	// time it sends no Last-Modified.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
