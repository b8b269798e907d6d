package cloudwatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	smithy "github.com/aws/smithy-go"

	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/cloudwatch"
	"github.com/aishell/aishell/shared/report/cloudwatch/cloudwatchtest"
	"github.com/aishell/aishell/shared/report/corpus"
)

// moto is the one moto_server of this package's tests.
var moto *cloudwatchtest.Moto

func TestMain(m *testing.M) {
	var err error
	moto, err = cloudwatchtest.StartMoto()
	if errors.Is(err, cloudwatchtest.ErrNoMoto) && os.Getenv("CI") == "" {
		fmt.Fprintln(os.Stderr, "skipping the CloudWatch tests:", err)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	moto.Stop()
	os.Exit(code)
}

// recentCorpus is a corpus of the four days before today, the incident
// yesterday: CloudWatch takes no events older than 14 days.
func recentCorpus() (*corpus.Corpus, time.Time) {
	yesterday := time.Now().UTC().AddDate(0, 0, -1)
	c := corpus.Generate(corpus.Options{First: yesterday.AddDate(0, 0, -3), Days: 4, Seed: 11, BadDay: 3})
	return c, yesterday
}

func jsonOf(t *testing.T, r *report.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestReportFromCloudWatch(t *testing.T) {
	ctx := context.Background()
	client, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, yesterday := recentCorpus()
	groups, err := cloudwatchtest.PutCorpus(ctx, client, "/aishell/cwtest", c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		period   report.Period
		pageSize int32
	}{
		{"yesterday, many small pages", report.PeriodEnding(yesterday, 1), 50},
		{"three days, full pages", report.PeriodEnding(yesterday, 3), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := cloudwatch.New(client, groups)
			src.PageSize, src.Pace = tt.pageSize, time.Millisecond
			var progress bytes.Buffer
			src.Progress = &progress
			opts := report.Options{Env: "test", Period: tt.period}

			got, err := report.Build(ctx, src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := got.Figures, c.Want(tt.period); g != w {
				t.Errorf("figures:\ngot  %+v\nwant %+v", g, w)
			}
			// The same corpus read from files gives the same report.
			local, err := report.Build(ctx, report.Dir{Path: dir}, opts)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := jsonOf(t, got), jsonOf(t, local); g != w {
				t.Errorf("json from CloudWatch:\n%s\nwant as from files:\n%s", g, w)
			}
			if len(got.Anomalies) == 0 {
				t.Errorf("anomalies: got none; want the incident's")
			}
			for _, g := range groups {
				if !strings.Contains(progress.String(), g+": 1 pages") {
					t.Errorf("progress: got %q; want a line for %s", progress.String(), g)
				}
				if paged := strings.Contains(progress.String(), g+": 2 pages"); paged != (tt.pageSize > 0) {
					t.Errorf("%s paged: got %v; want %v", g, paged, tt.pageSize > 0)
				}
			}
		})
	}
}

// throttler stands between the client and moto and answers the first
// FilterLogEvents calls with ThrottlingException, as CloudWatch does over
// its rate.
type throttler struct {
	left      atomic.Int32 // throttled answers still to give
	throttled atomic.Int32
	proxy     *httputil.ReverseProxy
}

func (th *throttler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".FilterLogEvents") && th.left.Add(-1) >= 0 {
		th.throttled.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"__type":"ThrottlingException","message":"Rate exceeded"}`)
		return
	}
	th.proxy.ServeHTTP(w, r)
}

func TestScanRetriesThrottling(t *testing.T) {
	ctx := context.Background()
	direct, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, yesterday := recentCorpus()
	groups, err := cloudwatchtest.PutCorpus(ctx, direct, "/aishell/throttled", c)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(moto.URL)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name          string
		throttles     int32
		wantThrottled int32
		wantErr       bool
	}{
		{"two throttled calls are retried", 2, 2, false},
		{"throttled past the attempts fails with the cause", 100, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := &throttler{proxy: httputil.NewSingleHostReverseProxy(target)}
			th.left.Store(tt.throttles)
			srv := httptest.NewServer(th)
			defer srv.Close()
			m := *moto
			m.URL = srv.URL
			client, err := m.Client(ctx)
			if err != nil {
				t.Fatal(err)
			}
			src := cloudwatch.New(client, groups)
			src.Pace = 0
			p := report.PeriodEnding(yesterday, 1)

			r, err := report.Build(ctx, src, report.Options{Env: "test", Period: p})
			if got := th.throttled.Load(); got != tt.wantThrottled {
				t.Errorf("throttled answers: got %d; want %d", got, tt.wantThrottled)
			}
			if tt.wantErr {
				var apiErr smithy.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ThrottlingException" {
					t.Errorf("error: got %v; want ThrottlingException", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := r.Figures, c.Want(p); g != w {
				t.Errorf("figures:\ngot  %+v\nwant %+v", g, w)
			}
		})
	}
}

func TestScanMissingLogGroup(t *testing.T) {
	ctx := context.Background()
	client, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src := cloudwatch.New(client, cloudwatch.DefaultLogGroups("nowhere"))
	p := report.PeriodEnding(time.Now(), 1)
	_, err = src.Scan(ctx, p.Start(), p.End(), func(report.Event) {})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "/aishell/nowhere/relay") {
		t.Errorf("error: got %v; want ResourceNotFoundException naming the group", err)
	}
}

// A single call pages through events that share one timestamp.
func TestScanPagesWithinOneMillisecond(t *testing.T) {
	ctx := context.Background()
	client, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	group, stream := "/aishell/burst/relay", "relay/burst"
	if _, err := client.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: &group}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{
		LogGroupName: &group, LogStreamName: &stream,
	}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	line := fmt.Sprintf(`{"timestamp":"%s","level":"info","event":"%s"}`,
		at.Format("2006-01-02T15:04:05.000Z07:00"), events.UserMessage)
	var batch []types.InputLogEvent
	ms := at.UnixMilli()
	for range 25 {
		batch = append(batch, types.InputLogEvent{Message: &line, Timestamp: &ms})
	}
	if _, err := client.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{
		LogGroupName: &group, LogStreamName: &stream, LogEvents: batch,
	}); err != nil {
		t.Fatal(err)
	}

	src := cloudwatch.New(client, []string{group})
	src.PageSize, src.Pace = 10, 0
	n := 0
	stats, err := src.Scan(ctx, at, at.Add(time.Millisecond), func(report.Event) { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 || stats.Lines != 25 {
		t.Errorf("events: got %d of %d lines; want 25 of 25", n, stats.Lines)
	}
}

func TestFilterPattern(t *testing.T) {
	p := cloudwatch.FilterPattern()
	if !strings.HasPrefix(p, "{ ") || !strings.HasSuffix(p, " }") {
		t.Errorf("pattern: got %q; want a JSON pattern in braces", p)
	}
	// CloudWatch takes patterns up to 1024 characters.
	if len(p) > 1024 {
		t.Errorf("pattern length: got %d; want at most 1024", len(p))
	}
	for _, name := range append([]string{"error"}, report.CountedEvents...) {
		if !strings.Contains(p, `"`+name+`"`) {
			t.Errorf("pattern %q lacks %q", p, name)
		}
	}
}

func TestDefaultLogGroups(t *testing.T) {
	got := cloudwatch.DefaultLogGroups("stage")
	want := []string{"/aishell/stage/relay", "/aishell/stage/lambdas"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v; want %v", got, want)
	}
}
