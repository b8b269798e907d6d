package queries_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/aishell/aishell/queries"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
)

// The queries of R15.
var wantNames = []string{
	"errors-summary", "message-roundtrip", "restart-analysis",
	"task-startup-latency", "user-activity", "ws-disconnects",
}

// fields a query may read: those of R12 and the extra fields of R13a, as the
// Go code names them. "timestamp", "level" and "message" are R12 fields
// that shared/logging writes under slog's own keys.
func knownFields() map[string]bool {
	names := []string{
		"timestamp", "level", "message",
		logging.KeyService, logging.KeyModule, logging.KeyEvent, logging.KeySessionID, logging.KeyUserID,
		logging.KeyTaskArn, logging.KeyTraceID, logging.KeyRequestID, logging.KeyDurationMs,
		events.FieldPhase, events.FieldBreakdown, events.FieldRestart, events.FieldSuccess,
		events.FieldProcessingState, events.FieldReason, events.FieldErrorCode, events.FieldWaitedMs,
		events.FieldStep, events.FieldResumed, events.FieldWarm, events.FieldRelayID,
		events.FieldAvailable, events.FieldStarting, events.FieldTarget,
	}
	for _, k := range []string{
		events.BreakdownAccessPoint, events.BreakdownRegisterTaskDef, events.BreakdownRunTask,
		events.BreakdownPendingToRunning, events.BreakdownWaitConnection, events.BreakdownWarmClaim,
	} {
		names = append(names, events.FieldBreakdown+"."+k)
	}
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// knownValues are the values a query may compare a field with; a field not
// listed here takes any value.
func knownValues() map[string][]string {
	return map[string][]string{
		logging.KeyEvent: {
			events.SessionCreated, events.TaskLifecycle, events.TaskStartFailed, events.TaskConnectTimeout,
			events.TaskRestartFailed, events.TaskRejected, events.TicketRejected, events.UserMessage,
			events.RelayStarted, events.WarmPool,
		},
		events.FieldPhase: {
			events.PhaseSessionCreate, events.PhaseTaskStart, events.PhaseTaskPending, events.PhaseTaskConnect,
			events.PhaseTaskReady, events.PhaseTaskRestart, events.PhaseWSDisconnect, events.PhaseMessageRoundtrip,
		},
		events.FieldReason: {
			events.ReasonUnknownSession, events.ReasonBadCredential, events.ReasonExpired, events.ReasonInvalid,
		},
		events.FieldProcessingState: {events.Processing, events.Idle},
		"level":                     {"debug", "info", "warn", "error"},
	}
}

// Words of the Logs Insights language that are neither fields nor values.
var (
	keywords = map[string]bool{
		"fields": true, "filter": true, "stats": true, "sort": true, "limit": true, "display": true,
		"parse": true, "by": true, "as": true, "and": true, "or": true, "not": true, "in": true,
		"like": true, "asc": true, "desc": true, "dedup": true,
	}
	functions = map[string]bool{
		"count": true, "count_distinct": true, "sum": true, "avg": true, "min": true, "max": true,
		"pct": true, "bin": true, "ispresent": true, "stddev": true, "earliest": true, "latest": true,
	}
)

type token struct {
	kind string // "ident", "string", "number", "punct"
	text string
}

// tokenize splits a Logs Insights query into tokens, dropping # comments.
func tokenize(q string) ([]token, error) {
	var out []token
	r := []rune(q)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case c == '#':
			for i < len(r) && r[i] != '\n' {
				i++
			}
		case unicode.IsSpace(c):
			i++
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(r) && r[j] != c {
				if r[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, token{"string", string(r[i+1 : j])})
			i = j + 1
		case c == '`':
			j := i + 1
			for j < len(r) && r[j] != '`' {
				j++
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated quoted field at %d", i)
			}
			out = append(out, token{"ident", string(r[i+1 : j])})
			i = j + 1
		case unicode.IsLetter(c) || c == '_' || c == '@':
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || strings.ContainsRune("_.@", r[j])) {
				j++
			}
			out = append(out, token{"ident", string(r[i:j])})
			i = j
		case unicode.IsDigit(c):
			j := i
			for j < len(r) && (unicode.IsDigit(r[j]) || unicode.IsLetter(r[j]) || r[j] == '.') {
				j++
			}
			out = append(out, token{"number", string(r[i:j])})
			i = j
		case strings.HasPrefix(string(r[i:]), "!=") || strings.HasPrefix(string(r[i:]), ">=") ||
			strings.HasPrefix(string(r[i:]), "<="):
			out = append(out, token{"punct", string(r[i : i+2])})
			i += 2
		case strings.ContainsRune("|,()[]=<>*+-", c):
			out = append(out, token{"punct", string(c)})
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// mention is what a query reads: its fields and the values it compares
// fields with.
type mention struct {
	fields  []string
	values  map[string][]string // field -> literal values compared with
	aliases []string
}

// mentions finds the fields a query reads and the string literals it
// compares them with (field = "x", field != "x", field in ["x", "y"]).
func mentions(toks []token) (mention, error) {
	m := mention{values: map[string][]string{}}
	for i, t := range toks {
		if t.kind != "ident" {
			continue
		}
		lower := strings.ToLower(t.text)
		switch {
		case strings.HasPrefix(t.text, "@"):
			continue // a field Logs Insights makes itself
		case keywords[lower]:
			continue
		case i+1 < len(toks) && toks[i+1].text == "(":
			if !functions[lower] {
				return m, fmt.Errorf("unknown function %s", t.text)
			}
			continue
		case i > 0 && strings.EqualFold(toks[i-1].text, "as"):
			m.aliases = append(m.aliases, t.text)
			continue
		}
		m.fields = append(m.fields, t.text)

		if i+2 < len(toks) && (toks[i+1].text == "=" || toks[i+1].text == "!=") {
			if toks[i+2].kind == "string" {
				m.values[t.text] = append(m.values[t.text], toks[i+2].text)
			}
		}
		if i+2 < len(toks) && strings.EqualFold(toks[i+1].text, "in") && toks[i+2].text == "[" {
			for j := i + 3; j < len(toks) && toks[j].text != "]"; j++ {
				if toks[j].kind == "string" {
					m.values[t.text] = append(m.values[t.text], toks[j].text)
				}
			}
		}
	}
	return m, nil
}

func TestQueryFiles(t *testing.T) {
	all := queries.All()
	var got []string
	for name := range all {
		got = append(got, name)
	}
	sort.Strings(got)
	if !slices.Equal(got, wantNames) {
		t.Errorf("queries: got %v; want %v", got, wantNames)
	}
}

// unknown lists the fields and compared values of a query that neither
// shared/events nor the R12 fields know.
func unknown(text string) ([]string, mention, error) {
	toks, err := tokenize(text)
	if err != nil {
		return nil, mention{}, fmt.Errorf("tokenize: %w", err)
	}
	m, err := mentions(toks)
	if err != nil {
		return nil, m, err
	}
	fields, values := knownFields(), knownValues()
	var out []string
	for _, f := range m.fields {
		if !fields[f] && !slices.Contains(m.aliases, f) {
			out = append(out, f)
		}
	}
	for f, vs := range m.values {
		for _, v := range vs {
			if allowed, ok := values[f]; ok && !slices.Contains(allowed, v) {
				out = append(out, f+" = "+v)
			}
		}
	}
	return out, m, nil
}

// Every event name, phase, reason and field a query mentions exists in
// shared/events or among the R12 fields: a rename on either side fails here.
func TestQueriesReadKnownEvents(t *testing.T) {
	for name, text := range queries.All() {
		t.Run(name, func(t *testing.T) {
			bad, m, err := unknown(text)
			if err != nil {
				t.Fatal(err)
			}
			if len(bad) > 0 {
				t.Errorf("unknown to shared/events and R12: got %v; want none", bad)
			}
			if len(m.fields) == 0 {
				t.Errorf("fields: got none; want the fields the query reads")
			}
			if len(m.values[logging.KeyEvent]) == 0 {
				t.Errorf("event filter: got none; want the query to select events by name")
			}
			if !strings.HasPrefix(strings.TrimSpace(text), "#") {
				t.Errorf("comment: got none; want the query to start by saying what it shows")
			}
		})
	}
}

// The checker itself catches what it is there to catch.
func TestCheckerCatchesRenames(t *testing.T) {
	tests := []struct {
		name  string
		query string
		bad   string
	}{
		{"renamed event", `fields @timestamp | filter event = "task_started"`, "event = task_started"},
		{"renamed phase", `filter event = "task_lifecycle" and phase = "ready"`, "phase = ready"},
		{"renamed field", `filter event = "user_message" | stats count(*) as n by sessionID`, "sessionID"},
		{"event in a list", `filter event in ["user_message", "usr_msg"]`, "event = usr_msg"},
		{"renamed breakdown key", `fields breakdown.run_ms | filter event = "task_lifecycle"`, "breakdown.run_ms"},
		{"renamed reason", `filter event = "task_rejected" and reason = "unknown"`, "reason = unknown"},
		{"aliases are not fields", `filter event = "user_message" | stats count(*) as n | sort n desc`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := unknown(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != tt.bad {
				t.Errorf("unknown: got %v; want [%s]", got, tt.bad)
			}
		})
	}
}

func TestTokenizeErrors(t *testing.T) {
	for _, q := range []string{`filter event = "open`, "fields `open", `filter a ~ b`} {
		if _, err := tokenize(q); err == nil {
			t.Errorf("tokenize(%q): got no error; want one", q)
		}
	}
}
