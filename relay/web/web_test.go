package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, srv *httptest.Server, path string, header map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatalf("new request %s: %v", path, err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestHandlerServesPageFiles(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	cases := []struct {
		name     string
		path     string
		wantType string
		wantBody string
	}{
		{"root is index.html", "/", "text/html; charset=utf-8", `id="terminal"`},
		{"index.html by name", "/index.html", "text/html; charset=utf-8", "<title>AI Shell"},
		{"app script", "/app.js", "text/javascript; charset=utf-8", "window.aishell"},
		{"stylesheet", "/app.css", "text/css; charset=utf-8", "--bg"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, srv, tc.path, nil)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d; want 200", res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("Content-Type %q; want %q", got, tc.wantType)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q; want no-cache", got)
			}
			if !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body lacks %q", tc.wantBody)
			}
		})
	}
}

func TestHandlerServesVendorFilesWhenPresent(t *testing.T) {
	cases := []struct {
		path     string
		wantType string
	}{
		{"/vendor/xterm.js", "text/javascript; charset=utf-8"},
		{"/vendor/addon-fit.js", "text/javascript; charset=utf-8"},
		{"/vendor/xterm.css", "text/css; charset=utf-8"},
	}
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if _, err := fs.Stat(static, "static"+tc.path); err != nil {
				t.Skipf("%s not copied (run make web): %v", tc.path, err)
			}
			res := get(t, srv, tc.path, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d; want 200", res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != tc.wantType {
				t.Errorf("Content-Type %q; want %q", got, tc.wantType)
			}
		})
	}
}

func TestHandlerRefusesWhatIsNotAFile(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	for _, path := range []string{
		"/nope", "/vendor/", "/vendor", "/static/index.html", "/app.js/",
		"/vendor/.stamp", "/../web.go", "/web.go", "/%2e%2e/web.go",
	} {
		t.Run(path, func(t *testing.T) {
			res := get(t, srv, path, nil)
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("status %d; want 404", res.StatusCode)
			}
		})
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	first := get(t, srv, "/", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on index.html")
	}
	again := get(t, srv, "/", map[string]string{"If-None-Match": etag})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("status %d with matching If-None-Match; want 304", again.StatusCode)
	}
}

func TestPageKeepsToItsOwnOrigin(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	res := get(t, srv, "/", nil)
	csp := res.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q; want default-src 'self'", csp)
	}

	// No page file names another host: no CDN, no web fonts.
	for _, name := range []string{"static/index.html", "static/app.js", "static/app.css"} {
		body, err := fs.ReadFile(static, name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		for _, scheme := range []string{"http://", "https://", "//cdn", "@import url("} {
			if strings.Contains(string(body), scheme) {
				t.Errorf("%s contains %q", name, scheme)
			}
		}
	}
}

func TestHandlerRefusesWrites(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	res, err := srv.Client().Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatalf("POST /: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("status %d; want 405", res.StatusCode)
	}
}
