package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLinesCarryTheR12Fields(t *testing.T) {
	var buf bytes.Buffer
	log := Module(New(&buf, "relay", slog.LevelDebug), "hub").With(KeySessionID, "s_1")
	Event(t.Context(), log, slog.LevelWarn, "task_rejected", "task held too long",
		slog.String("reason", "unknown_session"), Duration(1500*time.Millisecond))

	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("line is not JSON: %q", buf.String())
	}
	want := map[string]any{
		"level": "warn", "service": "relay", "module": "hub", "event": "task_rejected",
		"message": "task held too long", "sessionId": "s_1", "reason": "unknown_session",
		"duration_ms": float64(1500),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v; want %v", k, m[k], v)
		}
	}
	ts, _ := m["timestamp"].(string)
	if _, err := time.Parse(time.RFC3339, ts); err != nil || !strings.HasSuffix(ts, "Z") {
		t.Errorf("timestamp %q is not RFC 3339 UTC", ts)
	}
	if _, ok := m["msg"]; ok {
		t.Errorf("slog's own msg key leaked: %v", m)
	}
}

func TestDailyFileRollsOverAtUTCMidnight(t *testing.T) {
	dir := t.TempDir()
	f, err := NewDailyFile(dir, "relay")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	day := time.Date(2026, 12, 4, 23, 59, 59, 0, time.UTC)
	f.now = func() time.Time { return day }
	f.Write([]byte("{\"a\":1}\n"))
	day = day.Add(2 * time.Second)
	f.Write([]byte("{\"b\":2}\n"))

	for name, want := range map[string]string{
		"relay-2026-12-04.jsonl": "{\"a\":1}\n",
		"relay-2026-12-05.jsonl": "{\"b\":2}\n",
	} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}
