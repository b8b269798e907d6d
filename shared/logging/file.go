package logging

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DailyFile is an io.Writer that appends JSON lines to one file per UTC day,
// named PREFIX-YYYY-MM-DD.jsonl in its folder. It is the one-machine stand-in
// for CloudWatch Logs, and what the daily report reads there. The files
// are readable by their owner only: they name every user and session, and
// agents run under other uids. Each Write is
// expected to be one whole line, as slog's handlers write them.
type DailyFile struct {
	dir    string
	prefix string
	now    func() time.Time

	mu   sync.Mutex // guards day and file
	day  string
	file *os.File
}

// NewDailyFile creates dir if needed and returns a writer into it.
func NewDailyFile(dir, prefix string) (*DailyFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create log folder: %w", err)
	}
	return &DailyFile{dir: dir, prefix: prefix, now: time.Now}, nil
}

// Write appends p to the file of the current UTC day.
func (d *DailyFile) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	day := d.now().UTC().Format("2006-01-02")
	if d.file == nil || day != d.day {
		if d.file != nil {
			d.file.Close()
		}
		name := filepath.Join(d.dir, d.prefix+"-"+day+".jsonl")
		f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			d.file = nil
			return 0, fmt.Errorf("open log file: %w", err)
		}
		d.file, d.day = f, day
	}
	return d.file.Write(p)
}

// Close closes the current file.
func (d *DailyFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.file == nil {
		return nil
	}
	err := d.file.Close()
	d.file = nil
	return err
}
