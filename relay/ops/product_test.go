package ops_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/aishell/aishell/relay/local"
	"github.com/aishell/aishell/relay/ops"
	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/sessionapi"
)

// These tests run the whole product on one machine (relay/local) with real
// bridge processes, and read the page as an operator's browser would.

var bridgeBin string

func TestMain(m *testing.M) {
	dir, err := buildtest.Build("bridge")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bridgeBin = filepath.Join(dir, "bridge")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startProduct starts the product on a free loopback port with its own
// data folder and stops it when the test ends.
func startProduct(t *testing.T, warm int) *local.Product {
	t.Helper()
	return buildtest.Product(t, local.Config{
		BridgePath:   bridgeBin,
		WarmPool:     warm > 0,
		WarmPoolSize: warm,
	})
}

// openSession signs user in, creates a session and attaches a client
// socket, and returns once the session is ready.
func openSession(t *testing.T, p *local.Product, user string) sessionapi.SessionObject {
	t.Helper()
	resp, err := http.Get(p.URL + "/api/dev/token?user=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()

	req, _ := http.NewRequest(http.MethodPost, p.URL+"/api/sessions", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s sessionapi.SessionObject
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: status %d, %v", resp.StatusCode, err)
	}

	ws, _, err := websocket.DefaultDialer.Dial(s.RelayURL+"?ticket="+url.QueryEscape(s.Ticket), nil)
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var f struct{ Type string }
		if err := ws.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for session_ready: %v", err)
		}
		if f.Type == wire.TypeSessionReady {
			break
		}
	}
	// Keep reading, as a browser does, so that the relay never finds the
	// client slow.
	ws.SetReadDeadline(time.Time{})
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return s
}

func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func snapshot(t *testing.T, p *local.Product) ops.Snapshot {
	t.Helper()
	resp, body := get(t, p.URL+ops.JSONPath)
	var s ops.Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", ops.JSONPath, resp.StatusCode, err)
	}
	return s
}

// settled reports whether the warm pool is back at its target of one
// available task, connected to the hub, after a session claimed one.
func settled(s ops.Snapshot) bool {
	return s.Hub.WarmAvailable == 1 && len(s.Warm.Tasks) == 1 && s.Warm.Tasks[0].State == "available"
}

func TestPageShowsLiveSessionsAndThePool(t *testing.T) {
	p := startProduct(t, 1)
	s := openSession(t, p, "ada")

	// The refill replaces a claimed warm task in its own goroutine, with
	// no event an outside reader can wait on: read until it is back.
	var snap ops.Snapshot
	deadline := time.Now().Add(20 * time.Second)
	for snap = snapshot(t, p); !settled(snap); snap = snapshot(t, p) {
		if time.Now().After(deadline) {
			t.Fatalf("warm pool never settled: %+v", snap.Warm)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The JSON says what the hub and the store say.
	if len(snap.Sessions) != 1 {
		t.Fatalf("sessions: got %+v; want the one opened", snap.Sessions)
	}
	got := snap.Sessions[0]
	if got.ID != s.SessionID || got.UserID != "ada" || got.State != wire.StateReady || !got.Client ||
		!got.Ready || got.TaskID == "" || got.Restarting || got.Queued != 0 {
		t.Errorf("session: got %+v; want %s of ada, ready, client attached, a task", got, s.SessionID)
	}
	for _, h := range p.Hub.Sessions() {
		if h.ID == got.ID && (h.UserID != got.UserID || h.TaskID != got.TaskID || h.State != got.State) {
			t.Errorf("session: got %+v; the hub says %+v", got, h)
		}
	}
	warm, err := p.Store.ListWarmTasks(context.Background(), snap.RelayID)
	if err != nil || len(warm) != 1 || warm[0].ID != snap.Warm.Tasks[0].ID {
		t.Errorf("warm tasks: got %+v; the store says %+v (%v)", snap.Warm.Tasks, warm, err)
	}
	if snap.RelayID != "relay-local" || snap.Warm.Target != 1 || snap.Hub.Sessions != 1 || snap.Hub.Clients != 1 {
		t.Errorf("got relay %s, target %d, hub %+v; want relay-local, 1, one session with its client",
			snap.RelayID, snap.Warm.Target, snap.Hub)
	}

	// Today's report reads the product's own log files. The session was
	// logged before its ticket was handed out; its task's readiness may be
	// logged a moment after the client heard of it, so it is not counted
	// on here.
	r := snap.Report
	if r.Error != "" || r.Today == nil || r.Today.Sessions.Created != 1 || r.Today.RelayStarts != 1 ||
		len(r.Days) != ops.TrendDays || len(r.Startup) == 0 {
		t.Errorf("report: got %+v (error %q); want today's session and relay start", r.Today, r.Error)
	}

	// The page shows the same.
	resp, page := get(t, p.URL+ops.PagePath)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ops: %d", resp.StatusCode)
	}
	for _, want := range []string{
		fmt.Sprintf(`data-state="ready" data-session="%s"`, s.SessionID),
		`<strong title="user">ada</strong>`, "client attached", got.TaskID,
		fmt.Sprintf(`<tr data-task="%s"><td><code>%[1]s</code></td><td>available</td>`, snap.Warm.Tasks[0].ID),
		`<div class="value">1</div><div class="label">sessions created</div>`,
		`<svg class="chart"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(page, `<svg class="chart"`); n != 3 {
		t.Errorf("charts: got %d; want 3", n)
	}
}

// scriptOf returns the text of the page's inline script.
var scriptOf = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

func TestRoutes(t *testing.T) {
	p := startProduct(t, 0)

	tests := []struct {
		name     string
		method   string
		path     string
		host     string
		wantCode int
		wantType string
		wantBody string
	}{
		{"the page", http.MethodGet, "/ops", "", 200, "text/html; charset=utf-8", "AI Shell operator"},
		{"the page with a slash", http.MethodGet, "/ops/", "", 200, "text/html; charset=utf-8", "AI Shell operator"},
		{"the page's head", http.MethodHead, "/ops", "", 200, "text/html; charset=utf-8", ""},
		{"the json", http.MethodGet, "/ops.json", "", 200, "application/json", `"relayId": "relay-local"`},
		{"the week's report", http.MethodGet, "/ops/report", "", 200, "text/html; charset=utf-8",
			"AI Shell report: local"},
		{"nothing else", http.MethodGet, "/ops/anything", "", 404, "", ""},
		{"no post", http.MethodPost, "/ops", "", 405, "", ""},
		{"no other host name", http.MethodGet, "/ops", "ops.example", 421, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, p.URL+tt.path, nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status: got %d; want %d; body %s", resp.StatusCode, tt.wantCode, b)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("type: got %q; want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if !strings.Contains(string(b), tt.wantBody) {
				t.Errorf("body: got %.200q; want %q in it", b, tt.wantBody)
			}
			if tt.wantCode == 200 && resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control: got %q; want no-store", resp.Header.Get("Cache-Control"))
			}
		})
	}

	// The page's policy lets exactly its own inline script run.
	resp, page := get(t, p.URL+ops.PagePath)
	m := scriptOf.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("page has no script")
	}
	sum := sha256.Sum256([]byte(m[1]))
	csp := resp.Header.Get("Content-Security-Policy")
	if want := "script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) ||
		!strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy: got %q; want %q and default-src 'none'", csp, want)
	}
}

func TestRefusesPeersOfOtherMachines(t *testing.T) {
	p := startProduct(t, 0)
	h := ops.New(ops.Options{Hub: p.Hub, Store: p.Store, RelayID: "relay-local", LogsDir: p.LogsDir, Env: "local"})

	tests := []struct {
		peer string
		want int
	}{
		{"127.0.0.1:50000", http.StatusOK},
		{"[::1]:50000", http.StatusOK},
		{"192.0.2.7:50000", http.StatusForbidden},
		{"[2001:db8::7]:50000", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.peer, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/ops.json", nil)
			req.RemoteAddr = tt.peer
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status: got %d; want %d", rec.Code, tt.want)
			}
		})
	}
}
