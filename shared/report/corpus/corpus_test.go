package corpus_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/corpus"
)

func TestGenerateIsRepeatable(t *testing.T) {
	o := corpus.Options{First: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Days: 2, Seed: 9, BadDay: 1}
	a, b := corpus.Generate(o), corpus.Generate(o)
	if !reflect.DeepEqual(a.Lines, b.Lines) {
		t.Errorf("two corpora of the same options differ")
	}
	o.Seed++
	if c := corpus.Generate(o); reflect.DeepEqual(a.Lines, c.Lines) {
		t.Errorf("corpora of two seeds are the same")
	}
}

func TestWriteFilesByDayWritten(t *testing.T) {
	first := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := corpus.Generate(corpus.Options{First: first, Days: 2, Seed: 1, BadDay: -1})
	dir := t.TempDir()
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		file string
		want string // a line the file holds
	}{
		// The last moment of a day is written into the next day's file.
		{"relay-2026-03-02.jsonl", `{"timestamp":"2026-03-01T23:59:59.999Z"`},
		{"relay-2026-03-01.jsonl", `{"timestamp":"2026-03-01T00:00:00.000Z"`},
		{"relay-2026-03-01.jsonl", "aishell relay listening on 127.0.0.1:8080"},
		{"lambdas-2026-03-02.jsonl", `"event":"session_created"`},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.want, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("%s: got no line with %s", tt.file, tt.want)
			}
		})
	}
	if got, want := c.Garbage(first), 2; got != want {
		t.Errorf("unparseable lines on the first day: got %d; want %d (a banner and a cut line)", got, want)
	}
	if got := c.Want(report.PeriodEnding(first.AddDate(0, 0, 5), 1)); got.Sessions.Created != 0 {
		t.Errorf("figures of a day outside the corpus: got %+v; want none", got)
	}
}
