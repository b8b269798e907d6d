package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
)

// Keys that shared/logging writes under names of slog's own (time, level,
// message) and so exports no constant for; the corpus test writes lines
// through shared/logging and would fail if these drifted.
const (
	keyTimestamp = "timestamp"
	keyLevel     = "level"
)

// levelError is the "level" value of error events, as shared/logging writes it.
var levelError = strings.ToLower(slog.LevelError.String())

// ErrBlankLine is ParseLine's answer to an empty line; sources skip such
// lines without counting them as unparseable.
var ErrBlankLine = errors.New("blank line")

// Event is one log event, reduced to the fields the report reads.
type Event struct {
	Time            time.Time
	Level           string
	Name            string // the "event" field
	Phase           string
	DurationMs      float64
	HasDuration     bool
	Restart         bool
	Resumed         bool
	ProcessingState string
	Reason          string
	ErrorCode       string
}

// ParseLine reads one JSON log line. The event's time is its "timestamp"
// field; when that is missing, fallback is used instead, unless fallback is
// zero, in which case the line is an error. A line that is not a JSON object
// is an error too. A line without an "event" field parses, but counts for
// nothing.
func ParseLine(line []byte, fallback time.Time) (Event, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return Event{}, ErrBlankLine
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Event{}, fmt.Errorf("decode log line: %w", err)
	}

	var e Event
	var ts string
	if v, ok := raw[keyTimestamp]; ok {
		if err := json.Unmarshal(v, &ts); err != nil {
			return Event{}, fmt.Errorf("decode %s: %w", keyTimestamp, err)
		}
	}
	switch {
	case ts != "":
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Event{}, fmt.Errorf("parse %s: %w", keyTimestamp, err)
		}
		e.Time = t.UTC()
	case !fallback.IsZero():
		e.Time = fallback.UTC()
	default:
		return Event{}, fmt.Errorf("log line has no %s", keyTimestamp)
	}

	// The remaining fields are read leniently: a field of an unexpected
	// type is treated as absent rather than throwing the line away.
	e.Level = strings.ToLower(stringField(raw, keyLevel))
	e.Name = stringField(raw, logging.KeyEvent)
	e.Phase = stringField(raw, events.FieldPhase)
	e.ProcessingState = stringField(raw, events.FieldProcessingState)
	e.Reason = stringField(raw, events.FieldReason)
	e.ErrorCode = stringField(raw, events.FieldErrorCode)
	e.Restart = boolField(raw, events.FieldRestart)
	e.Resumed = boolField(raw, events.FieldResumed)
	if v, ok := raw[logging.KeyDurationMs]; ok {
		if err := json.Unmarshal(v, &e.DurationMs); err == nil {
			e.HasDuration = true
		}
	}
	return e, nil
}

func stringField(raw map[string]json.RawMessage, key string) string {
	var s string
	if v, ok := raw[key]; ok {
		_ = json.Unmarshal(v, &s) // a non-string value reads as absent
	}
	return s
}

func boolField(raw map[string]json.RawMessage, key string) bool {
	var b bool
	if v, ok := raw[key]; ok {
		_ = json.Unmarshal(v, &b) // a non-bool value reads as false
	}
	return b
}
