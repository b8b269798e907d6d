package report_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/report"
)

// steady is a day with nothing wrong.
func steady() report.Figures {
	return report.Figures{
		Sessions:    report.Sessions{Created: 40, Resumed: 10},
		Tasks:       report.Tasks{Starts: 50, Connected: 50, ConnectSuccessRate: 1},
		StartupMs:   report.Startup{Count: 50, P50: 300, P90: 3000, P99: 5000, Max: 5000},
		Errors:      report.Errors{TokenExpired: 3, NoBridge: 0},
		Disconnects: report.Disconnects{Processing: 6, Idle: 30},
		RelayStarts: 0,
		Messages:    report.Messages{UserMessages: 100, FirstTokenAvgMs: 3000},
	}
}

func TestDetect(t *testing.T) {
	dayBefore := &report.Baseline{When: "the day before", Figures: steady()}
	tests := []struct {
		name   string
		change func(*report.Figures)
		base   *report.Baseline
		want   []report.Anomaly
	}{
		{"steady day, nothing to say", func(*report.Figures) {}, dayBefore, []report.Anomaly{}},
		{"steady day without a baseline", func(*report.Figures) {}, nil, []report.Anomaly{}},
		{"p99 above the threshold and up", func(f *report.Figures) { f.StartupMs.P99 = 12400 }, dayBefore,
			[]report.Anomaly{{"startup_ms.p99",
				"p99 start-up 12400 ms, above the 10000 ms threshold, up from 5000 ms the day before"}}},
		{"p99 above the threshold without a baseline", func(f *report.Figures) { f.StartupMs.P99 = 12400 }, nil,
			[]report.Anomaly{{"startup_ms.p99", "p99 start-up 12400 ms, above the 10000 ms threshold"}}},
		{"p99 above the threshold but as high the day before",
			func(f *report.Figures) { f.StartupMs.P99 = 12400 },
			&report.Baseline{When: "the day before", Figures: func() report.Figures {
				f := steady()
				f.StartupMs.P99 = 12000
				return f
			}()},
			[]report.Anomaly{{"startup_ms.p99",
				"p99 start-up 12400 ms, above the 10000 ms threshold (12000 ms the day before)"}}},
		{"p99 at exactly the threshold is not above it",
			func(f *report.Figures) { f.StartupMs.P99 = 10000 }, nil, []report.Anomaly{}},
		{"p50 up by a fifth and 250 ms", func(f *report.Figures) { f.StartupMs.P50 = 560 }, dayBefore,
			[]report.Anomaly{{"startup_ms.p50", "p50 start-up 560 ms, up from 300 ms the day before"}}},
		{"p50 up by less than 250 ms is noise", func(f *report.Figures) { f.StartupMs.P50 = 540 }, dayBefore,
			[]report.Anomaly{}},
		{"p90 up by 250 ms but less than a fifth is noise", func(f *report.Figures) { f.StartupMs.P90 = 3500 },
			dayBefore, []report.Anomaly{}},
		{"restart failures from none", func(f *report.Figures) { f.Errors.RestartFailed = 3 }, dayBefore,
			[]report.Anomaly{{"errors.restart_failed", "restart failures 3, up from 0 the day before"}}},
		{"restart failures without a baseline", func(f *report.Figures) { f.Errors.RestartFailed = 3 }, nil,
			[]report.Anomaly{{"errors.restart_failed", "restart failures 3, expected none"}}},
		{"access denied, fewer than the day before", func(f *report.Figures) { f.Errors.AccessDenied = 1 },
			&report.Baseline{When: "on 2026-12-01", Figures: func() report.Figures {
				f := steady()
				f.Errors.AccessDenied = 4
				return f
			}()},
			[]report.Anomaly{{"errors.access_denied", "access-denied errors 1, expected none (4 on 2026-12-01)"}}},
		{"connect failures and the success rate", func(f *report.Figures) {
			f.Tasks.Connected, f.Tasks.ConnectFailures, f.Tasks.ConnectSuccessRate = 48, 2, 0.96
		}, dayBefore, []report.Anomaly{
			{"tasks.connect_failures", "connect failures 2, up from 0 the day before"},
			{"tasks.connect_success_rate", "connect success rate 96.0%, down from 100.0% the day before"},
		}},
		{"success rate down by less than two points is noise", func(f *report.Figures) {
			f.Tasks.ConnectSuccessRate = 0.9801
		}, dayBefore, []report.Anomaly{}},
		{"success rate down by exactly two points", func(f *report.Figures) { f.Tasks.ConnectSuccessRate = 0.93 },
			&report.Baseline{When: "the day before", Figures: func() report.Figures {
				f := steady()
				f.Tasks.ConnectSuccessRate = 0.95
				return f
			}()},
			[]report.Anomaly{{"tasks.connect_success_rate",
				"connect success rate 93.0%, down from 95.0% the day before"}}},
		{"time-outs, no-bridge and relay restarts on any rise", func(f *report.Figures) {
			f.Errors.TaskConnectTimeout, f.Errors.NoBridge, f.RelayStarts = 1, 2, 1
		}, dayBefore, []report.Anomaly{
			{"errors.task_connect_timeout", "task connect time-outs 1, up from 0 the day before"},
			{"errors.no_bridge", "no-bridge rejections 2, up from 0 the day before"},
			{"relay_starts", "relay restarts 1, up from 0 the day before"},
		}},
		{"expired tickets only when doubled and five more", func(f *report.Figures) {
			f.Errors.TokenExpired = 8
		}, dayBefore, []report.Anomaly{{"errors.token_expired", "expired tickets 8, up from 3 the day before"}}},
		{"expired tickets up by four is noise", func(f *report.Figures) { f.Errors.TokenExpired = 7 }, dayBefore,
			[]report.Anomaly{}},
		{"disconnects while processing up by half", func(f *report.Figures) { f.Disconnects.Processing = 9 },
			dayBefore, []report.Anomaly{{"disconnects.processing",
				"disconnects while processing 9, up from 6 the day before"}}},
		{"slower first token", func(f *report.Figures) { f.Messages.FirstTokenAvgMs = 4600 }, dayBefore,
			[]report.Anomaly{{"messages.first_token_avg_ms",
				"average first-token latency 4600 ms, up from 3000 ms the day before"}}},
		{"sessions created halved", func(f *report.Figures) { f.Sessions.Created = 12 },
			&report.Baseline{When: "in the previous 7 days", Figures: steady()},
			[]report.Anomaly{{"sessions.created", "sessions created 12, down from 40 in the previous 7 days"}}},
		{"improvements are not anomalies", func(f *report.Figures) {
			f.StartupMs.P50, f.StartupMs.P99, f.Errors.TokenExpired, f.Sessions.Created = 100, 1000, 0, 90
		}, dayBefore, []report.Anomaly{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := steady()
			tt.change(&cur)
			if got := report.Detect(cur, tt.base); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestWhen(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 12, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name      string
		cur, base report.Period
		want      string
	}{
		{"the day before", report.PeriodEnding(day(4), 1), report.PeriodEnding(day(3), 1), "the day before"},
		{"a chosen day", report.PeriodEnding(day(4), 1), report.PeriodEnding(day(1), 1), "on 2026-12-01"},
		{"the week before", report.PeriodEnding(day(14), 7), report.PeriodEnding(day(7), 7),
			"in the previous 7 days"},
		{"a chosen week", report.PeriodEnding(day(14), 7), report.PeriodEnding(day(5), 7),
			"in the 7 days to 2026-12-05"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := report.When(tt.cur, tt.base); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestPeriod(t *testing.T) {
	p := report.PeriodEnding(time.Date(2026, 12, 4, 17, 30, 0, 0, time.FixedZone("x", -8*3600)), 7)
	// 17:30 at UTC-8 is already 5 December in UTC.
	if got, want := p.String(), "2026-11-29 to 2026-12-05"; got != want {
		t.Errorf("period: got %q; want %q", got, want)
	}
	if got, want := p.End(), time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("end: got %v; want %v", got, want)
	}
	if got, want := p.Before().String(), "2026-11-22 to 2026-11-28"; got != want {
		t.Errorf("before: got %q; want %q", got, want)
	}
}
