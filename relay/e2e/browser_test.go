package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/internal/webdriver"
	"github.com/aishell/aishell/shared/session"
)

// browserWait bounds each wait on the page; the steps of a healthy run take
// well under a second each.
const browserWait = 10 * time.Second

// TestBrowserTerminalSession drives the product's page in headless Chromium
// the way a person would: sign in, type into the terminal, reload, end the
// session. The page talks to the real relay, which runs a real shell.
func TestBrowserTerminalSession(t *testing.T) {
	p := startProduct(t, options{page: true, warm: 1})
	b := &browserPage{d: webdriver.New(t)}
	// The first session should claim the warm task, so it must be there.
	eventually(t, wait, "a warm task available", func() bool {
		return countWarm(t, p.Store, session.WarmAvailable) == 1
	})
	var sessionID string

	ok := t.Run("sign-in opens a warm session", func(t *testing.T) {
		if err := b.d.Navigate(p.URL + "/"); err != nil {
			t.Fatalf("open page: %v", err)
		}
		b.waitFor(t, "page signed out", `return window.aishell.state === "signedout"`)
		user := b.find(t, "#user")
		if err := user.SendKeys("ada"); err != nil {
			t.Fatalf("type name: %v", err)
		}
		b.click(t, "#signin")

		b.waitFor(t, "session ready", `return window.aishell.state === "ready"`)
		s := b.snapshot(t)
		sessionID = s.SessionID
		if !strings.HasPrefix(s.SessionID, "s_") {
			t.Errorf("session id %q; want one starting with s_", s.SessionID)
		}
		if s.Warm == nil || !*s.Warm {
			t.Errorf("warm %v; want true (a warm task was available)", s.Warm)
		}
		if s.StatusState != "ready" || !strings.HasPrefix(s.Status, "Ready (warm start in ") ||
			!strings.Contains(s.Status, s.SessionID) {
			t.Errorf("status line %q (data-state %q); want Ready, a warm start and the id %s",
				s.Status, s.StatusState, s.SessionID)
		}
		if s.Who != "Signed in as ada" {
			t.Errorf("account line %q; want %q", s.Who, "Signed in as ada")
		}
		s.checkNoError(t)
	})
	if !ok {
		return
	}

	ok = t.Run("typed command runs in the shell", func(t *testing.T) {
		b.typeCommand(t, "echo browser-$((20+22))")
		b.waitFor(t, "command output on screen",
			`return window.aishell.screenText().includes("browser-42")`)

		// Set a shell variable for the next step, and wait until the shell
		// has taken it, so that the reload cannot overtake it.
		b.typeCommand(t, "mark=kept; echo mark-set-$((1+1))")
		b.waitFor(t, "variable set", `return window.aishell.screenText().includes("mark-set-2")`)

		s := b.snapshot(t)
		if s.State != "ready" || s.StatusState != "ready" {
			t.Errorf("after the command: state %q, status %q; want ready", s.State, s.Status)
		}
		s.checkNoError(t)
	})
	if !ok {
		return
	}

	ok = t.Run("reload resumes the same running shell", func(t *testing.T) {
		if err := b.d.Refresh(); err != nil {
			t.Fatalf("reload: %v", err)
		}
		b.waitFor(t, "resumed session ready",
			`return window.aishell.state === "ready" && window.aishell.resumed === true`)
		s := b.snapshot(t)
		if s.SessionID != sessionID {
			t.Errorf("session after reload %q; want %q", s.SessionID, sessionID)
		}
		if !strings.HasPrefix(s.Status, "Ready") || !strings.Contains(s.Status, "resumed") {
			t.Errorf("status line %q; want Ready and resumed", s.Status)
		}
		s.checkNoError(t)

		// Only the shell that ran before the reload knows $mark; neither
		// typed line contains the text waited for.
		b.typeCommand(t, `echo "seen-$mark-$((1+1))"`)
		b.waitFor(t, "variable from before the reload",
			`return window.aishell.screenText().includes("seen-kept-2")`)
		b.screenshot(t, "browser-terminal.png")
	})
	if !ok {
		return
	}

	t.Run("end session", func(t *testing.T) {
		b.click(t, "#end-session")
		b.waitFor(t, "session ended", `return window.aishell.state === "ended"`)
		s := b.snapshot(t)
		if s.Status != "Session ended · "+sessionID || s.StatusState != "ended" {
			t.Errorf("status line %q (data-state %q); want %q", s.Status, s.StatusState,
				"Session ended · "+sessionID)
		}
		if !s.EndDisabled {
			t.Error("End session button still enabled after the session ended")
		}
		s.checkNoError(t)
		b.screenshot(t, "browser-ended.png")

		// The API agrees: the session is gone.
		api := newAPIClient(t, p.URL, "ada")
		status, body := api.call(http.MethodGet, "/sessions/"+sessionID, nil)
		if status != http.StatusNotFound {
			t.Errorf("GET ended session: %d %s; want 404", status, body)
		}
	})
}

// browserPage drives the product's page in one browser.
type browserPage struct {
	d *webdriver.Driver
}

// pageSnapshot is what the page shows and knows at one moment.
type pageSnapshot struct {
	State       string          `json:"state"`
	SessionID   string          `json:"sessionId"`
	Warm        *bool           `json:"warm"`
	Resumed     *bool           `json:"resumed"`
	LastError   json.RawMessage `json:"lastError"`
	Status      string          `json:"status"`
	StatusState string          `json:"statusState"`
	Error       string          `json:"error"`
	ErrorShown  bool            `json:"errorShown"`
	Who         string          `json:"who"`
	EndDisabled bool            `json:"endDisabled"`
	Screen      string          `json:"screen"`
}

const snapshotScript = `
const a = window.aishell;
const el = (id) => document.getElementById(id);
return {
  state: a.state, sessionId: a.sessionId, warm: a.warm, resumed: a.resumed,
  lastError: a.lastError,
  status: el("status").textContent, statusState: el("status").dataset.state || "",
  error: el("error").textContent, errorShown: !el("error").hidden,
  who: el("whoami").textContent, endDisabled: el("end-session").disabled,
  screen: a.screenText(),
};`

func (b *browserPage) snapshot(t *testing.T) pageSnapshot {
	t.Helper()
	s, err := webdriver.Eval[pageSnapshot](b.d, snapshotScript)
	if err != nil {
		t.Fatalf("read page: %v", err)
	}
	return s
}

// checkNoError fails the test if the page shows or holds an error.
func (s pageSnapshot) checkNoError(t *testing.T) {
	t.Helper()
	if s.ErrorShown || s.Error != "" {
		t.Errorf("error line shown: %q", s.Error)
	}
	if string(s.LastError) != "null" {
		t.Errorf("window.aishell.lastError = %s; want null", s.LastError)
	}
}

// describe tells what the page shows and logged, for a failure message.
func (b *browserPage) describe() string {
	var out strings.Builder
	if s, err := webdriver.Eval[pageSnapshot](b.d, snapshotScript); err != nil {
		fmt.Fprintf(&out, "page unreadable: %v", err)
	} else {
		fmt.Fprintf(&out, "state %q, session %q, status %q, error %q\nscreen:\n%s",
			s.State, s.SessionID, s.Status, s.Error, s.Screen)
	}
	if entries, err := b.d.BrowserLog(); err == nil {
		for _, e := range entries {
			fmt.Fprintf(&out, "\nconsole %s: %s", e.Level, e.Message)
		}
	}
	return out.String()
}

// waitFor waits until script, run in the page, returns true.
func (b *browserPage) waitFor(t *testing.T, what, script string) {
	t.Helper()
	err := b.d.WaitFor(func() (bool, error) {
		return webdriver.Eval[bool](b.d, script)
	}, browserWait)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.describe())
	}
}

func (b *browserPage) find(t *testing.T, css string) *webdriver.Element {
	t.Helper()
	el, err := b.d.FindElement(css)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.describe())
	}
	return el
}

func (b *browserPage) click(t *testing.T, css string) {
	t.Helper()
	if err := b.find(t, css).Click(); err != nil {
		t.Fatalf("click %s: %v\n%s", css, err, b.describe())
	}
}

// typeCommand focuses the terminal, as a click does for a person, and types
// line followed by Enter.
func (b *browserPage) typeCommand(t *testing.T, line string) {
	t.Helper()
	b.click(t, "#terminal")
	if err := b.d.TypeKeys(line + "\n"); err != nil {
		t.Fatalf("type %q: %v\n%s", line, err, b.describe())
	}
}

// screenshot keeps a picture of the page in the test's folder and, when
// AISHELL_SCREENSHOT_DIR is set, there too for a person to look at.
func (b *browserPage) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := b.d.Screenshot()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dirs := []string{t.TempDir()}
	if dir := os.Getenv("AISHELL_SCREENSHOT_DIR"); dir != "" {
		dirs = append(dirs, dir)
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("keep screenshot: %v", err)
			continue
		}
		t.Logf("screenshot %s", path)
	}
}
