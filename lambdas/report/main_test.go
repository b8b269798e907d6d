package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/cloudwatch/cloudwatchtest"
	"github.com/aishell/aishell/shared/report/corpus"
)

var moto *cloudwatchtest.Moto

// recorder notes the AWS operations of the Lambda's wiring; TestMain checks
// them against the report Lambda's role (R11).
var recorder = awsops.NewRecorder()

func TestMain(m *testing.M) {
	var err error
	moto, err = cloudwatchtest.StartMoto()
	if errors.Is(err, cloudwatchtest.ErrNoMoto) && os.Getenv("CI") == "" {
		fmt.Fprintln(os.Stderr, "moto_server not installed: the AWS cases are skipped")
		moto = nil
	} else if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if moto != nil {
		moto.Stop()
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := recorder.Check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// now is the command's clock in these tests: yesterday is 2026-12-04.
var now = time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"unknown flag", []string{"--dates", "2026-12-01"}, "dates"},
		{"date not a date", []string{"--date", "2026-13-01"}, "--date"},
		{"date in the future", []string{"--date", "2026-12-06"}, "--date"},
		{"range not days", []string{"--range", "week"}, "--range"},
		{"range zero", []string{"--range", "0d"}, "--range"},
		{"range too long", []string{"--range", "400d"}, "--range"},
		{"unknown format", []string{"--format", "pdf"}, "--format"},
		{"unknown source", []string{"--source", "s3"}, "--source"},
		{"compare not a date", []string{"--compare", "last week"}, "--compare"},
		{"compare inside the period", []string{"--date", "2026-12-04", "--range", "3d", "--compare", "2026-12-03"},
			"--compare"},
		{"env with a slash", []string{"--env", "a/b"}, "--env"},
		{"stray argument", []string{"today"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, env(nil), now)
			if code != 2 {
				t.Errorf("exit: got %d; want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr: got %q; want it to name %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: got %q; want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr, env(nil), now); code != 0 {
		t.Errorf("exit: got %d; want 0", code)
	}
	for _, f := range []string{"-date", "-range", "-env", "-format", "-compare", "-source", "-logs",
		"-log-group", "-endpoint"} {
		if !strings.Contains(stderr.String(), f) {
			t.Errorf("usage lacks %s", f)
		}
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		vars       map[string]string
		wantPeriod string
		wantLogs   string
		wantGroups string
		wantCmp    string
	}{
		{"yesterday from ./.data", nil, nil, "2026-12-04", filepath.Join(".data", "logs"),
			"/aishell/local/relay,/aishell/local/lambdas", ""},
		{"a week to a date, DATA_DIR moved", []string{"--date", "2026-11-30", "--range", "7d"},
			map[string]string{"DATA_DIR": "/srv/aishell"}, "2026-11-24 to 2026-11-30", "/srv/aishell/logs",
			"/aishell/local/relay,/aishell/local/lambdas", ""},
		{"groups of the environment", []string{"--env", "stage", "--range", "2"}, nil,
			"2026-12-03 to 2026-12-04", filepath.Join(".data", "logs"),
			"/aishell/stage/relay,/aishell/stage/lambdas", ""},
		{"groups named", []string{"--log-group", "/x/a", "--log-group", "/x/b", "--compare", "2026-11-01"}, nil,
			"2026-12-04", filepath.Join(".data", "logs"), "/x/a,/x/b", "2026-11-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, &bytes.Buffer{}, env(tt.vars), now)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.opts.Period.String(); got != tt.wantPeriod {
				t.Errorf("period: got %q; want %q", got, tt.wantPeriod)
			}
			if cfg.logs != tt.wantLogs {
				t.Errorf("logs: got %q; want %q", cfg.logs, tt.wantLogs)
			}
			if got := strings.Join(cfg.groups, ","); got != tt.wantGroups {
				t.Errorf("log groups: got %q; want %q", got, tt.wantGroups)
			}
			got := ""
			if !cfg.opts.Compare.IsZero() {
				got = cfg.opts.Compare.Format(time.DateOnly)
			}
			if got != tt.wantCmp {
				t.Errorf("compare: got %q; want %q", got, tt.wantCmp)
			}
		})
	}
}

func TestRunOnLocalFiles(t *testing.T) {
	dataDir := t.TempDir()
	c := corpus.Generate(corpus.Options{
		First: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), Days: 5, Seed: 3, BadDay: 4,
	})
	if err := c.WriteFiles(filepath.Join(dataDir, "logs")); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"DATA_DIR": dataDir}
	yesterday := report.PeriodEnding(now.AddDate(0, 0, -1), 1)

	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{"json of yesterday", []string{"--format", "json", "--env", "test"}, func(t *testing.T, out string) {
			var got report.Report
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err)
			}
			if want := c.Want(yesterday); got.Figures != want {
				t.Errorf("figures: got %+v; want %+v", got.Figures, want)
			}
			if got.From != "2026-12-04" || got.Env != "test" || len(got.Anomalies) == 0 {
				t.Errorf("got from %s env %s anomalies %v; want 2026-12-04, test, some", got.From, got.Env, got.Anomalies)
			}
		}},
		{"markdown of a range", []string{"--range", "3d"}, func(t *testing.T, out string) {
			for _, w := range []string{"# AI Shell report: local, 2026-12-02 to 2026-12-04", "## Day by day",
				"| 2026-12-03 |"} {
				if !strings.Contains(out, w) {
					t.Errorf("markdown lacks %q", w)
				}
			}
		}},
		{"html", []string{"--format", "html", "--date", "2026-12-03"}, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "<!DOCTYPE html>") || !strings.Contains(out, "<svg") {
				t.Errorf("html: got %.80q...; want a page with charts", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr, env(vars), now); code != 0 {
				t.Fatalf("exit: got %d; want 0; stderr %s", code, stderr.String())
			}
			tt.check(t, stdout.String())
			// The corpus's unparseable lines are reported as one JSON
			// log line on stderr.
			var line map[string]any
			if err := json.Unmarshal(stderr.Bytes(), &line); err != nil || line["event"] != eventLogLinesUnparsed {
				t.Errorf("stderr: got %q; want one %s event", stderr.String(), eventLogLinesUnparsed)
			}
		})
	}
}

func TestRunFailsOnMissingFolder(t *testing.T) {
	var stdout, stderr bytes.Buffer
	vars := map[string]string{"DATA_DIR": filepath.Join(t.TempDir(), "none")}
	if code := run(context.Background(), nil, &stdout, &stderr, env(vars), now); code != 1 {
		t.Errorf("exit: got %d; want 1", code)
	}
	var line map[string]any
	if err := json.Unmarshal(stderr.Bytes(), &line); err != nil || line["event"] != eventReportFailed ||
		line["level"] != "error" {
		t.Errorf("stderr: got %q; want one %s error event", stderr.String(), eventReportFailed)
	}
}

func TestRunOnCloudWatch(t *testing.T) {
	if moto == nil {
		t.Skip("moto_server not installed")
	}
	ctx := context.Background()
	client, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// CloudWatch takes events of the last 14 days only: a recent corpus.
	clock := time.Now().UTC()
	c := corpus.Generate(corpus.Options{First: clock.AddDate(0, 0, -3), Days: 3, Seed: 5, BadDay: 2})
	if _, err := cloudwatchtest.PutCorpus(ctx, client, "/aishell/cmdtest", c); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	args := []string{"--source", "aws", "--env", "cmdtest", "--endpoint", moto.URL, "--region", "us-east-1",
		"--format", "json", "--range", "2d"}
	if code := run(ctx, args, &stdout, &stderr, env(nil), clock); code != 0 {
		t.Fatalf("exit: got %d; want 0; stderr %s", code, stderr.String())
	}
	var got report.Report
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if want := c.Want(report.PeriodEnding(clock.AddDate(0, 0, -1), 2)); got.Figures != want {
		t.Errorf("figures: got %+v; want %+v", got.Figures, want)
	}
}
