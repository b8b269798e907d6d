package report

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// An empty baseline chosen with --compare is named as that period, not as
// the day before.
func TestEmptyCompareNamesItsOwnPeriod(t *testing.T) {
	day := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	r, err := Build(context.Background(), Dir{Path: t.TempDir()}, Options{
		Env: "local", Period: PeriodEnding(day, 1), Compare: day.AddDate(0, 0, -7),
	})
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	if want := "No events in 2026-11-27 to compare with."; !strings.Contains(md.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, md.String())
	}
}
