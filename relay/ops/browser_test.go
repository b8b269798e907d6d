package ops_test

import (
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/internal/webdriver"
)

// TestPageRefreshesItself opens the page in headless Chromium, then opens
// a session: the page shows it without being reloaded, its script having
// run under the page's Content-Security-Policy.
func TestPageRefreshesItself(t *testing.T) {
	p := startProduct(t, 0)
	d := webdriver.New(t)
	if err := d.Navigate(p.URL + "/ops"); err != nil {
		t.Fatalf("open page: %v", err)
	}
	noSession, err := webdriver.Eval[bool](d,
		`window.sameDocument = true; return document.querySelector("#ops").textContent.includes("No session.")`)
	if err != nil || !noSession {
		t.Fatalf("before: got %v (%v); want the page saying No session.", noSession, err)
	}

	s := openSession(t, p, "grace")

	// The page refreshes every 5 s; two rounds are plenty.
	err = d.WaitFor(func() (bool, error) {
		return webdriver.Eval[bool](d, `return document.querySelector('[data-session="`+s.SessionID+`"]') !== null`)
	}, 15*time.Second)
	if err != nil {
		t.Fatalf("session card never appeared: %v", err)
	}
	same, err := webdriver.Eval[bool](d, `return window.sameDocument === true && `+
		`document.getElementById("live").dataset.state === "live"`)
	if err != nil || !same {
		t.Errorf("after: same document and live: got %v (%v); want true", same, err)
	}
	logs, err := d.BrowserLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if strings.Contains(l.Message, "Content Security Policy") || l.Level == "SEVERE" {
			t.Errorf("browser console: %s %s", l.Level, l.Message)
		}
	}
}
