package report

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Source delivers the log events of a time range. The report reads local
// JSON-lines files on one machine (Dir) and CloudWatch Logs in AWS
// (package shared/report/cloudwatch).
type Source interface {
	// Scan calls fn for every event whose time t has from <= t < to, in no
	// particular order, and says how many lines it read and how many of
	// them it could not parse.
	Scan(ctx context.Context, from, to time.Time, fn func(Event)) (ScanStats, error)
}

// ScanStats counts what a scan read.
type ScanStats struct {
	Lines    int // lines read, parseable or not, blank lines aside
	Unparsed int // lines that were not JSON log events
}

// Add sums two scans.
func (s ScanStats) Add(o ScanStats) ScanStats {
	return ScanStats{Lines: s.Lines + o.Lines, Unparsed: s.Unparsed + o.Unparsed}
}

// Dir reads the JSON-lines log files of one machine: every *.jsonl file in
// the folder Path ($DATA_DIR/logs), one per UTC day and service, named
// SERVICE-YYYY-MM-DD.jsonl by shared/logging.DailyFile.
type Dir struct {
	Path string
}

// Scan reads the files of Dir and selects events by their timestamp.
// A file whose name carries a date more than a day away from the range is
// skipped without being opened: a line lands in the file of the day it was
// written, at most moments after its timestamp. Unparseable lines have no
// time, so they are counted in every file that is read.
func (d Dir) Scan(ctx context.Context, from, to time.Time, fn func(Event)) (ScanStats, error) {
	var stats ScanStats
	names, err := filepath.Glob(filepath.Join(d.Path, "*.jsonl"))
	if err != nil {
		return stats, fmt.Errorf("list log files: %w", err)
	}
	if len(names) == 0 {
		if _, err := os.Stat(d.Path); err != nil {
			return stats, fmt.Errorf("read log folder: %w", err)
		}
	}
	sort.Strings(names)

	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		if day, ok := fileDay(name); ok &&
			(day.Before(from.AddDate(0, 0, -1)) || !day.Before(to.AddDate(0, 0, 1))) {
			continue
		}
		s, err := scanFile(name, from, to, fn)
		stats = stats.Add(s)
		if err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// fileDay reads the UTC day from a name ending in -YYYY-MM-DD.jsonl.
func fileDay(name string) (time.Time, bool) {
	base := strings.TrimSuffix(filepath.Base(name), ".jsonl")
	if len(base) < len("2006-01-02") {
		return time.Time{}, false
	}
	day, err := time.Parse(time.DateOnly, base[len(base)-len("2006-01-02"):])
	return day, err == nil
}

func scanFile(name string, from, to time.Time, fn func(Event)) (ScanStats, error) {
	var stats ScanStats
	f, err := os.Open(name)
	if err != nil {
		return stats, fmt.Errorf("open log file: %w", err)
	}
	defer f.Close()

	// ReadBytes rather than a Scanner: a line has no length limit.
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			stats.Feed(line, time.Time{}, from, to, fn)
		}
		if errors.Is(err, io.EOF) {
			return stats, nil
		}
		if err != nil {
			return stats, fmt.Errorf("read log file %s: %w", filepath.Base(name), err)
		}
	}
}

// Feed parses one line, counts it, and hands the event to fn when its time
// falls in [from, to). fallback is the time of a line without a timestamp,
// as ParseLine takes it.
func (s *ScanStats) Feed(line []byte, fallback, from, to time.Time, fn func(Event)) {
	e, err := ParseLine(line, fallback)
	if errors.Is(err, ErrBlankLine) {
		return
	}
	s.Lines++
	if err != nil {
		s.Unparsed++
		return
	}
	if !e.Time.Before(from) && e.Time.Before(to) {
		fn(e)
	}
}
