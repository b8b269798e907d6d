// Package webdriver is a small W3C WebDriver client for the browser tests of
// AI Shell. It starts chromedriver on a loopback port, opens one headless
// Chromium session with background networking off (the test machines have
// no outside network), and offers the few commands the tests need.
//
// Tests call New, which skips when Chromium or chromedriver is missing, but
// fails instead when the environment variable CI is "true", since CI
// installs both.
package webdriver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Default locations of Debian's chromium and chromium-driver packages.
const (
	DefaultChromium     = "/usr/bin/chromium"
	DefaultChromedriver = "/usr/bin/chromedriver"
)

// Keys of the WebDriver keyboard that SendKeys and TypeKeys understand.
const (
	KeyEnter     = "\ue007"
	KeyTab       = "\ue004"
	KeyBackspace = "\ue003"
	KeyEscape    = "\ue00c"
	KeyControl   = "\ue009"
	KeyArrowUp   = "\ue013"
	KeyArrowDown = "\ue015"
)

// elementKey names an element reference in the W3C protocol.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// BrowserArgs are the Chromium switches every session gets: headless, fit
// for running as root in a container, and with every connection Chromium
// makes on its own (updates, sync, metrics) switched off.
var BrowserArgs = []string{
	"--headless=new",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-dev-shm-usage",
	"--disable-quic",
	"--no-first-run",
	"--no-default-browser-check",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--disable-extensions",
	"--metrics-recording-only",
	"--password-store=basic",
	"--window-size=1280,800",
}

// Options say which binaries to run and where the browser keeps its profile.
// The zero value is not usable: UserDataDir must be set.
type Options struct {
	// Chromium is the browser binary; empty means DefaultChromium, or
	// "chromium" on the PATH.
	Chromium string
	// Chromedriver is the driver binary; empty means DefaultChromedriver, or
	// "chromedriver" on the PATH.
	Chromedriver string
	// UserDataDir is a fresh, empty folder for the browser's profile.
	UserDataDir string
	// ExtraArgs are added after BrowserArgs.
	ExtraArgs []string
	// StartTimeout bounds the start of chromedriver and of the browser
	// session; zero means 60 s (the first start on a cold machine is slow).
	StartTimeout time.Duration
}

// Available reports whether Chromium and chromedriver can be found, and if
// not, why.
func Available() (ok bool, why string) {
	var missing []string
	if _, err := findBinary("", DefaultChromium, "chromium"); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := findBinary("", DefaultChromedriver, "chromedriver"); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		return false, strings.Join(missing, "; ") +
			" (install Debian's chromium and chromium-driver packages)"
	}
	return true, ""
}

func findBinary(given, fallback, name string) (string, error) {
	if given != "" {
		return exec.LookPath(given)
	}
	if p, err := exec.LookPath(fallback); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found at %s or on the PATH", name, fallback)
}

// New starts a browser session for a test and closes it when the test ends.
// Without Chromium or chromedriver the test is skipped, or failed when the
// environment variable CI is "true".
func New(t testing.TB) *Driver {
	t.Helper()
	if ok, why := Available(); !ok {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser test cannot run in CI: %s", why)
		}
		t.Skipf("browser test skipped: %s", why)
	}
	// TempDir's clean-up runs after Close (clean-ups run last first), so the
	// browser has exited before its profile is removed.
	opts := Options{UserDataDir: t.TempDir()}
	d, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start browser: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close browser: %v", err)
		}
	})
	return d
}

// Driver is a running chromedriver holding one browser session. Its methods
// may be called from one goroutine at a time, as WebDriver sessions handle
// one command at a time anyway.
type Driver struct {
	base    string // http://127.0.0.1:port
	session string // WebDriver session id
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the chromedriver process has exited
	output  *tailBuffer   // the last lines chromedriver wrote, for errors

	closeOnce sync.Once
	closeErr  error
}

// startedLine is what chromedriver prints once it listens; with --port=0 it
// names the port it chose, so no free port has to be guessed beforehand.
var startedLine = regexp.MustCompile(`started successfully on port (\d+)`)

// Start runs chromedriver on a loopback port and opens a browser session.
// Chromedriver is left at its default of accepting local connections only:
// an --allowed-ips switch, even an empty one, makes it listen on every
// interface.
func Start(ctx context.Context, opts Options) (*Driver, error) {
	if opts.UserDataDir == "" {
		return nil, errors.New("start browser: Options.UserDataDir is empty")
	}
	chromium, err := findBinary(opts.Chromium, DefaultChromium, "chromium")
	if err != nil {
		return nil, fmt.Errorf("start browser: %w", err)
	}
	driverBin, err := findBinary(opts.Chromedriver, DefaultChromedriver, "chromedriver")
	if err != nil {
		return nil, fmt.Errorf("start browser: %w", err)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	d := &Driver{
		client: &http.Client{Timeout: 90 * time.Second},
		exited: make(chan struct{}),
		output: &tailBuffer{max: 8 << 10},
	}
	port, err := d.startDriver(ctx, driverBin)
	if err != nil {
		return nil, err
	}
	d.base = "http://127.0.0.1:" + port

	if err := d.waitReady(ctx); err != nil {
		d.stopProcess()
		return nil, err
	}
	if err := d.newSession(ctx, chromium, opts); err != nil {
		d.stopProcess()
		return nil, err
	}
	return d, nil
}

// startDriver starts chromedriver and returns the port it listens on, read
// from its start-up line.
func (d *Driver) startDriver(ctx context.Context, bin string) (string, error) {
	cmd := exec.Command(bin, "--port=0", "--log-level=WARNING")
	setProcessGroup(cmd)
	// A browser that outlives chromedriver may hold its output pipe open;
	// Wait must not hang on it.
	cmd.WaitDelay = 2 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", fmt.Errorf("start chromedriver: %w", err)
	}
	cmd.Stderr = d.output
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start chromedriver: %w", err)
	}
	d.cmd = cmd

	ports := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			line := sc.Text()
			d.output.Write([]byte(line + "\n"))
			if m := startedLine.FindStringSubmatch(line); m != nil && !found {
				found = true
				ports <- m[1]
			}
		}
		// Drain to EOF so Wait does not block on the pipe.
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()

	select {
	case port := <-ports:
		return port, nil
	case <-d.exited:
		return "", fmt.Errorf("start chromedriver: exited early: %s", d.output.String())
	case <-ctx.Done():
		d.stopProcess()
		return "", fmt.Errorf("start chromedriver: no start-up line: %w", ctx.Err())
	}
}

// waitReady asks /status until chromedriver says it is ready. Chromedriver
// has printed that it listens by now, so the first answer usually is yes.
func (d *Driver) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		var status struct {
			Ready   bool   `json:"ready"`
			Message string `json:"message"`
		}
		last = d.do(ctx, http.MethodGet, "/status", nil, &status)
		if last == nil && status.Ready {
			return nil
		}
		if last == nil {
			last = fmt.Errorf("not ready: %s", status.Message)
		}
		select {
		case <-tick.C:
		case <-d.exited:
			return fmt.Errorf("chromedriver status: exited: %s", d.output.String())
		case <-ctx.Done():
			return fmt.Errorf("chromedriver status: %w (last: %v)", ctx.Err(), last)
		}
	}
}

func (d *Driver) newSession(ctx context.Context, chromium string, opts Options) error {
	args := append([]string{}, BrowserArgs...)
	args = append(args, "--user-data-dir="+opts.UserDataDir)
	args = append(args, opts.ExtraArgs...)
	caps := map[string]any{
		"capabilities": map[string]any{
			"alwaysMatch": map[string]any{
				"browserName":      "chrome",
				"pageLoadStrategy": "normal",
				"timeouts": map[string]int{
					"implicit": 0, "pageLoad": 30000, "script": 30000,
				},
				"goog:chromeOptions": map[string]any{
					"binary": chromium,
					"args":   args,
				},
				"goog:loggingPrefs": map[string]string{"browser": "ALL"},
			},
		},
	}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	if err := d.do(ctx, http.MethodPost, "/session", caps, &created); err != nil {
		return fmt.Errorf("new browser session: %w (chromedriver said: %s)",
			err, d.output.String())
	}
	if created.SessionID == "" {
		return errors.New("new browser session: no session id in the answer")
	}
	d.session = created.SessionID
	return nil
}

// Close ends the browser session and stops chromedriver and everything it
// started. It is safe to call more than once.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		if d.session != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := d.do(ctx, http.MethodDelete, "/session/"+d.session, nil, nil)
			cancel()
			if err != nil {
				d.closeErr = fmt.Errorf("delete browser session: %w", err)
			}
		}
		d.stopProcess()
	})
	return d.closeErr
}

// stopProcess ends chromedriver and any browser left in its process group,
// and waits for chromedriver to exit. The group is signalled only while
// chromedriver still runs, so its id cannot have passed to another process.
func (d *Driver) stopProcess() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	kill(d.cmd)
	<-d.exited
}

// Error is an error answer of the WebDriver protocol.
type Error struct {
	Status  int    // HTTP status
	Code    string // W3C error code, such as "no such element"
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("webdriver: %s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// ErrNoSuchElement matches, with errors.Is, the error of a FindElement that
// found nothing.
var ErrNoSuchElement = &Error{Code: "no such element"}

// Is makes errors.Is match two Errors by their code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// do sends one command and decodes the answer's "value" into out (when not
// nil).
func (d *Driver) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	res, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}

	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("%s %s: HTTP %d, not JSON: %.200s", method, path, res.StatusCode, raw)
	}
	if res.StatusCode >= 400 {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(answer.Value, &e)
		return &Error{Status: res.StatusCode, Code: e.Error, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer.Value, out); err != nil {
		return fmt.Errorf("%s %s: decode value: %w", method, path, err)
	}
	return nil
}

// command sends a command of this session.
func (d *Driver) command(method, path string, body, out any) error {
	return d.do(context.Background(), method, "/session/"+d.session+path, body, out)
}

// Navigate loads url and waits for the page to load.
func (d *Driver) Navigate(url string) error {
	return d.command(http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// Refresh reloads the current page.
func (d *Driver) Refresh() error {
	return d.command(http.MethodPost, "/refresh", struct{}{}, nil)
}

// CurrentURL returns the address of the current page.
func (d *Driver) CurrentURL() (string, error) {
	var u string
	err := d.command(http.MethodGet, "/url", nil, &u)
	return u, err
}

// Element is an element of the current page.
type Element struct {
	d  *Driver
	id string
}

// MarshalJSON encodes the element as a WebDriver element reference, so that
// it can be passed to ExecuteScript as an argument.
func (e *Element) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{elementKey: e.id})
}

// FindElement returns the first element matching the CSS selector, or an
// error matching ErrNoSuchElement.
func (d *Driver) FindElement(css string) (*Element, error) {
	var ref map[string]string
	q := map[string]string{"using": "css selector", "value": css}
	if err := d.command(http.MethodPost, "/element", q, &ref); err != nil {
		return nil, fmt.Errorf("find %q: %w", css, err)
	}
	return &Element{d: d, id: ref[elementKey]}, nil
}

// FindElements returns every element matching the CSS selector.
func (d *Driver) FindElements(css string) ([]*Element, error) {
	var refs []map[string]string
	q := map[string]string{"using": "css selector", "value": css}
	if err := d.command(http.MethodPost, "/elements", q, &refs); err != nil {
		return nil, fmt.Errorf("find all %q: %w", css, err)
	}
	els := make([]*Element, len(refs))
	for i, ref := range refs {
		els[i] = &Element{d: d, id: ref[elementKey]}
	}
	return els, nil
}

// Click clicks the element in its middle.
func (e *Element) Click() error {
	return e.d.command(http.MethodPost, "/element/"+e.id+"/click", struct{}{}, nil)
}

// Clear empties an input or text area.
func (e *Element) Clear() error {
	return e.d.command(http.MethodPost, "/element/"+e.id+"/clear", struct{}{}, nil)
}

// SendKeys focuses the element and types text into it. Key constants such
// as KeyEnter may be part of text.
func (e *Element) SendKeys(text string) error {
	return e.d.command(http.MethodPost, "/element/"+e.id+"/value",
		map[string]string{"text": text}, nil)
}

// Text returns the element's rendered text.
func (e *Element) Text() (string, error) {
	var s string
	err := e.d.command(http.MethodGet, "/element/"+e.id+"/text", nil, &s)
	return s, err
}

// Property returns a DOM property of the element, such as "value" of an
// input, as JSON.
func (e *Element) Property(name string) (json.RawMessage, error) {
	var v json.RawMessage
	err := e.d.command(http.MethodGet, "/element/"+e.id+"/property/"+name, nil, &v)
	return v, err
}

// TypeKeys types text into whatever has the focus, key by key, the way a
// user would. Unlike SendKeys it needs no element, which suits widgets that
// read the keyboard through a hidden text area, such as xterm.js. A "\n" in
// text presses Enter and a "\t" Tab.
func (d *Driver) TypeKeys(text string) error {
	var actions []map[string]string
	for _, r := range text {
		k := string(r)
		switch r {
		case '\n':
			k = KeyEnter
		case '\t':
			k = KeyTab
		}
		actions = append(actions,
			map[string]string{"type": "keyDown", "value": k},
			map[string]string{"type": "keyUp", "value": k})
	}
	body := map[string]any{"actions": []any{map[string]any{
		"type": "key", "id": "keyboard", "actions": actions,
	}}}
	if err := d.command(http.MethodPost, "/actions", body, nil); err != nil {
		return fmt.Errorf("type keys: %w", err)
	}
	return d.command(http.MethodDelete, "/actions", nil, nil)
}

// ExecuteScript runs script as the body of a function in the page, with
// args as its arguments, and returns its result as JSON.
func (d *Driver) ExecuteScript(script string, args ...any) (json.RawMessage, error) {
	if args == nil {
		args = []any{}
	}
	var v json.RawMessage
	err := d.command(http.MethodPost, "/execute/sync",
		map[string]any{"script": script, "args": args}, &v)
	if err != nil {
		return nil, fmt.Errorf("execute script: %w", err)
	}
	return v, nil
}

// Eval runs script like ExecuteScript and decodes its result into a T.
func Eval[T any](d *Driver, script string, args ...any) (T, error) {
	var out T
	raw, err := d.ExecuteScript(script, args...)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("decode script result %.100s: %w", raw, err)
	}
	return out, nil
}

// Screenshot returns a PNG image of the browser's viewport.
func (d *Driver) Screenshot() ([]byte, error) {
	var b64 string
	if err := d.command(http.MethodGet, "/screenshot", nil, &b64); err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("screenshot: decode: %w", err)
	}
	return png, nil
}

// LogEntry is one message of the browser's console.
type LogEntry struct {
	Level     string `json:"level"`
	Message   string `json:"message"`
	Timestamp int64  `json:"timestamp"`
}

// BrowserLog returns the console messages logged since the last call, for
// explaining a failed page test. It uses chromedriver's log endpoint, which
// is not part of the W3C protocol.
func (d *Driver) BrowserLog() ([]LogEntry, error) {
	var entries []LogEntry
	err := d.command(http.MethodPost, "/se/log", map[string]string{"type": "browser"}, &entries)
	if err != nil {
		return nil, fmt.Errorf("browser log: %w", err)
	}
	return entries, nil
}

// WaitFor asks cond until it says true, and fails once timeout has passed.
// An error from cond does not end the wait (the page may not be there yet)
// but is reported if the wait times out; the wait ends at once if
// chromedriver has exited.
func (d *Driver) WaitFor(cond func() (bool, error), timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-tick.C:
		case <-d.exited:
			return fmt.Errorf("wait: chromedriver exited: %s", d.output.String())
		case <-deadline.C:
			if last != nil {
				return fmt.Errorf("wait: not true after %v; last error: %w", timeout, last)
			}
			return fmt.Errorf("wait: not true after %v", timeout)
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}
