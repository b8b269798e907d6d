package webdriver

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driver test</title>
<style>body{background:#102030;color:#f0f0f0;font:20px sans-serif}</style></head>
<body>
<label for="name">Name</label> <input id="name">
<button id="go" type="button">Go</button>
<p id="echo"></p>
<p id="clicks">0</p>
<script>
const name = document.getElementById("name");
name.addEventListener("input", () => {
  document.getElementById("echo").textContent = "hello " + name.value;
});
let clicks = 0;
document.getElementById("go").addEventListener("click", () => {
  clicks++;
  setTimeout(() => { document.getElementById("clicks").textContent = String(clicks); }, 100);
});
window.keys = "";
document.addEventListener("keydown", (ev) => { window.keys += ev.key.length === 1 ? ev.key : "[" + ev.key + "]"; });
</script>
</body></html>`

func pageServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, testPage)
	}))
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server at %s; want loopback", srv.URL)
	}
	return srv
}

func TestDriverTypesReadsAndShoots(t *testing.T) {
	d := New(t)
	srv := pageServer(t)

	if err := d.Navigate(srv.URL + "/"); err != nil {
		t.Fatalf("navigate: %v", err)
	}

	input, err := d.FindElement("#name")
	if err != nil {
		t.Fatal(err)
	}
	if err := input.SendKeys("Ada"); err != nil {
		t.Fatalf("send keys: %v", err)
	}
	echo, err := d.FindElement("#echo")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := echo.Text(); err != nil || got != "hello Ada" {
		t.Errorf("echo text %q, %v; want %q", got, err, "hello Ada")
	}
	value, err := input.Property("value")
	if err != nil || string(value) != `"Ada"` {
		t.Errorf("input value %s, %v; want %q", value, err, `"Ada"`)
	}

	// The click's effect lands later; WaitFor polls for it.
	button, err := d.FindElement("#go")
	if err != nil {
		t.Fatal(err)
	}
	if err := button.Click(); err != nil {
		t.Fatalf("click: %v", err)
	}
	err = d.WaitFor(func() (bool, error) {
		el, err := d.FindElement("#clicks")
		if err != nil {
			return false, err
		}
		text, err := el.Text()
		return text == "1", err
	}, 10*time.Second)
	if err != nil {
		t.Errorf("click count: %v", err)
	}

	title, err := Eval[string](d, "return document.title + ':' + arguments[0].id", input)
	if err != nil || title != "driver test:name" {
		t.Errorf("script result %q, %v; want %q", title, err, "driver test:name")
	}

	png, err := d.Screenshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 1000 {
		t.Errorf("screenshot of %d bytes is not a PNG image", len(png))
	}
	if dir := os.Getenv("WEBDRIVER_SCREENSHOT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "webdriver-test.png"), png, 0o644); err != nil {
			t.Errorf("keep screenshot: %v", err)
		}
	}
}

func TestDriverTypesIntoTheFocusedElement(t *testing.T) {
	d := New(t)
	srv := pageServer(t)
	if err := d.Navigate(srv.URL + "/"); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if _, err := d.ExecuteScript("document.getElementById('name').focus()"); err != nil {
		t.Fatal(err)
	}

	if err := d.TypeKeys("ls -l\n"); err != nil {
		t.Fatalf("type keys: %v", err)
	}

	keys, err := Eval[string](d, "return window.keys")
	if err != nil || keys != "ls -l[Enter]" {
		t.Errorf("keys seen %q, %v; want %q", keys, err, "ls -l[Enter]")
	}
}

func TestFindElementReportsAbsence(t *testing.T) {
	d := New(t)
	srv := pageServer(t)
	if err := d.Navigate(srv.URL + "/"); err != nil {
		t.Fatalf("navigate: %v", err)
	}

	_, err := d.FindElement("#missing")
	if !errors.Is(err, ErrNoSuchElement) {
		t.Errorf("find #missing: %v; want ErrNoSuchElement", err)
	}
	els, err := d.FindElements("p")
	if err != nil || len(els) != 2 {
		t.Errorf("find all p: %d, %v; want 2", len(els), err)
	}
}

func TestWaitForGivesUpWithTheLastError(t *testing.T) {
	d := &Driver{exited: make(chan struct{}), output: &tailBuffer{max: 100}}
	cause := errors.New("page not there")

	err := d.WaitFor(func() (bool, error) { return false, cause }, 200*time.Millisecond)

	if !errors.Is(err, cause) {
		t.Errorf("WaitFor: %v; want it to wrap %v", err, cause)
	}
}

func TestWaitForEndsWhenChromedriverExits(t *testing.T) {
	d := &Driver{exited: make(chan struct{}), output: &tailBuffer{max: 100}}
	d.output.Write([]byte("crashed"))
	close(d.exited)

	err := d.WaitFor(func() (bool, error) { return false, nil }, time.Hour)

	if err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Errorf("WaitFor: %v; want an error naming chromedriver's last words", err)
	}
}

func TestCloseEndsEveryProcess(t *testing.T) {
	d := New(t)
	pid := d.cmd.Process.Pid
	if running := processesInGroup(t, pid); len(running) < 2 {
		t.Fatalf("chromedriver's group %d holds %v; want chromedriver and the browser",
			pid, running)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}

	if left := processesInGroup(t, pid); len(left) > 0 {
		t.Errorf("processes left in chromedriver's group %d: %v", pid, left)
	}
}

// processesInGroup lists the live (not zombie) processes whose process group
// is pgid, read from /proc.
func processesInGroup(t *testing.T, pgid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var found []string
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses: state,
		// ppid, pgrp, ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid, pgrp int
		if _, err := fmt.Sscanf(s[i+1:], " %s %d %d", &state, &ppid, &pgrp); err != nil {
			continue
		}
		if pgrp == pgid && state != "Z" {
			found = append(found, e.Name()+" "+s[:i+1])
		}
	}
	return found
}
