package localtask

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/aishell/aishell/shared/logging"
)

// maxLine bounds a line kept in memory; a longer line is passed on in
// pieces of this size.
const maxLine = 64 << 10

// maxWords bounds the last words quoted in a stop reason.
const maxWords = 500

// lockedWriter serializes the writes of all bridges into the sink, so that
// lines never interleave.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// outputLines is the stdout or stderr of one bridge. It cuts what the
// bridge writes into lines and passes each to the sink: a JSON object
// unchanged, anything else wrapped into a bridge_output line. Each stream
// has one writer (the exec package's copying goroutine), so buf needs no
// lock.
type outputLines struct {
	r      *Runner
	t      *task
	stream string
	buf    []byte
}

func (o *outputLines) Write(p []byte) (int, error) {
	o.buf = append(o.buf, p...)
	rest := o.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		o.line(rest[:i])
		rest = rest[i+1:]
	}
	for len(rest) >= maxLine {
		o.line(rest[:maxLine])
		rest = rest[maxLine:]
	}
	o.buf = append(o.buf[:0], rest...)
	return len(p), nil
}

// flush passes on a last line that had no newline; called after the
// process's output is closed.
func (o *outputLines) flush() {
	if len(o.buf) > 0 {
		o.line(o.buf)
		o.buf = nil
	}
}

func (o *outputLines) line(b []byte) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return
	}
	if trimmed[0] == '{' && json.Valid(trimmed) {
		o.r.sink.Write(append(append([]byte(nil), trimmed...), '\n'))
		var rec struct {
			Message string `json:"message"`
		}
		// A message that is not a string is not last words; the line
		// itself was passed on all the same.
		if json.Unmarshal(trimmed, &rec) == nil && rec.Message != "" {
			o.t.out.logged(rec.Message)
		}
		return
	}

	text := string(bytes.TrimRight(b, "\r"))
	level := slog.LevelInfo
	if o.stream == "stderr" {
		level = slog.LevelWarn
	}
	logging.Event(context.Background(), o.r.wrapLog, level, "bridge_output", text,
		slog.String(logging.KeyTaskArn, o.t.id), slog.String("stream", o.stream))
	o.t.out.printed(text)
}

// lastWords remembers what a bridge said last, for the stop reason of a
// bridge that exited on its own: the message of its last JSON log line; or,
// if it crashed, the Go runtime's panic line; or, if it wrote no JSON at
// all, its last line.
type lastWords struct {
	mu       sync.Mutex // guards the fields below
	message  string
	crash    string
	lastLine string
}

func (w *lastWords) logged(message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.message = message
}

func (w *lastWords) printed(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastLine = line
	crashed := strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ")
	if w.crash == "" && crashed {
		w.crash = line
	}
}

func (w *lastWords) words() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.lastLine
	switch {
	case w.crash != "":
		s = w.crash
	case w.message != "":
		s = w.message
	}
	return clip(strings.TrimSpace(s), maxWords)
}

// clip shortens s to at most n bytes without cutting a character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
