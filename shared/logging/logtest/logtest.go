// Package logtest captures a component's JSON log lines in tests and reads
// them back by event.
package logtest

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/aishell/aishell/shared/logging"
)

// Buffer collects log lines; it is an io.Writer for logging.New, safe for
// concurrent use.
type Buffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// Write appends log output.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines returns every line, decoded; a line that is not one JSON object
// fails the test (R12: nothing prints free text).
func (b *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	text := append([]byte(nil), b.buf.Bytes()...)
	b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(text), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not one JSON object: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// Events returns the lines whose event is name.
func (b *Buffer) Events(t testing.TB, name string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range b.Lines(t) {
		if m[logging.KeyEvent] == name {
			out = append(out, m)
		}
	}
	return out
}

// First returns the first line whose event is name, or nil.
func (b *Buffer) First(t testing.TB, name string) map[string]any {
	t.Helper()
	if lines := b.Events(t, name); len(lines) > 0 {
		return lines[0]
	}
	return nil
}
