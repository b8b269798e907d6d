package schedule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/corpus"
	"github.com/aishell/aishell/shared/report/schedule"
)

// The S3 and SNS of these tests are fakes: they are AWS services, outside
// this machine. The events come from real log files of a generated corpus.
// The moto test of the wired Lambda is in lambdas/report.

type objectStore struct {
	mu   sync.Mutex // guards objs
	objs map[string]object
	fail string // a key whose put fails
}

type object struct {
	body        []byte
	contentType string
}

func (o *objectStore) PutObject(ctx context.Context, in *s3.PutObjectInput,
	_ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if aws.ToString(in.Key) == o.fail {
		return nil, errors.New("AccessDenied: not allowed")
	}
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.objs == nil {
		o.objs = map[string]object{}
	}
	o.objs[aws.ToString(in.Bucket)+"/"+aws.ToString(in.Key)] = object{b, aws.ToString(in.ContentType)}
	return &s3.PutObjectOutput{}, nil
}

type topic struct {
	mu   sync.Mutex // guards sent
	sent []*sns.PublishInput
	fail bool
}

func (tp *topic) Publish(ctx context.Context, in *sns.PublishInput,
	_ ...func(*sns.Options)) (*sns.PublishOutput, error) {
	if tp.fail {
		return nil, errors.New("AuthorizationError: not allowed")
	}
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.sent = append(tp.sent, in)
	return &sns.PublishOutput{MessageId: aws.String("msg-1")}, nil
}

// brokenSource fails every scan, as CloudWatch does without permission.
type brokenSource struct{}

func (brokenSource) Scan(context.Context, time.Time, time.Time, func(report.Event)) (report.ScanStats, error) {
	return report.ScanStats{}, errors.New("AccessDeniedException: logs:FilterLogEvents")
}

// The corpus's days are 2026-11-30 to 2026-12-04, the incident on the last;
// the schedule fires at 00:15 on 2026-12-05.
var (
	firstDay  = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	fired     = time.Date(2026, 12, 5, 0, 15, 0, 0, time.UTC)
	yesterday = report.PeriodEnding(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), 1)
)

const (
	requestID = "8f5b7d8e-0000-4000-8000-000000000001"
	traceRoot = "1-67891233-abcdef012345678912345678"
)

// invocation returns a context as the Lambda runtime makes it, with the
// request id, and sets the trace header the runtime sets.
func invocation(t *testing.T) context.Context {
	t.Helper()
	t.Setenv("_X_AMZN_TRACE_ID", "Root="+traceRoot+";Parent=53995c3f42cd8ad8;Sampled=1")
	return lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: requestID})
}

func corpusDir(t *testing.T) (*corpus.Corpus, string) {
	t.Helper()
	c := corpus.Generate(corpus.Options{First: firstDay, Days: 5, Seed: 7, BadDay: 4})
	dir := t.TempDir()
	if err := c.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func newHandler(dir string, logs io.Writer) (*schedule.Handler, *objectStore, *topic) {
	objs, tp := &objectStore{}, &topic{}
	return &schedule.Handler{
		Env:      "stage",
		Source:   report.Dir{Path: dir},
		Objects:  objs,
		Topic:    tp,
		Bucket:   "aishell-reports",
		TopicARN: "arn:aws:sns:us-east-1:123456789012:aishell-stage-report",
		Now:      func() time.Time { return fired.Add(2 * time.Hour) },
		Log:      logging.New(logs, "report", nil),
	}, objs, tp
}

// logLines parses the handler's log output; every line must be JSON.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// checkIDs fails unless every line names the invocation and the service.
func checkIDs(t *testing.T, lines []map[string]any) {
	t.Helper()
	for _, l := range lines {
		if l[logging.KeyRequestID] != requestID || l[logging.KeyTraceID] != traceRoot || l["service"] != "report" {
			t.Errorf("log line %v: want requestId %s, traceId %s, service report", l, requestID, traceRoot)
		}
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name        string
		ev          schedule.Event
		wantPeriod  string
		wantCompare string
		wantErr     string
	}{
		{"schedule: the day before its time", schedule.Event{Time: "2026-12-05T00:15:00Z"}, "2026-12-04", "", ""},
		{"schedule retried after midnight keeps its day", schedule.Event{Time: "2026-12-04T23:59:00Z"},
			"2026-12-03", "", ""},
		{"no time: the day before now", schedule.Event{}, "2026-12-06", "", ""},
		{"a day by hand", schedule.Event{Date: "2026-12-03"}, "2026-12-03", "", ""},
		{"a week with a baseline", schedule.Event{Date: "2026-12-03", Range: "7d", Compare: "2026-11-20"},
			"2026-11-27 to 2026-12-03", "2026-11-20", ""},
		{"range without d", schedule.Event{Date: "2026-12-03", Range: "2"}, "2026-12-02 to 2026-12-03", "", ""},
		{"bad time", schedule.Event{Time: "yesterday"}, "", "", "time"},
		{"bad date", schedule.Event{Date: "2026-13-01"}, "", "", "date"},
		{"date in the future", schedule.Event{Date: "2026-12-08"}, "", "", "future"},
		{"range zero", schedule.Event{Range: "0d"}, "", "", "range"},
		{"range too long", schedule.Event{Range: "367d"}, "", "", "range"},
		{"bad compare", schedule.Event{Compare: "last week"}, "", "", "compare"},
		{"compare inside the period", schedule.Event{Date: "2026-12-03", Range: "3d", Compare: "2026-12-02"},
			"", "", "compare"},
	}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := schedule.Options(tt.ev, "stage", now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error: got %v; want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := opts.Period.String(); got != tt.wantPeriod {
				t.Errorf("period: got %s; want %s", got, tt.wantPeriod)
			}
			got := ""
			if !opts.Compare.IsZero() {
				got = opts.Compare.Format(time.DateOnly)
			}
			if got != tt.wantCompare || opts.Env != "stage" {
				t.Errorf("compare, env: got %q, %q; want %q, stage", got, opts.Env, tt.wantCompare)
			}
		})
	}
}

func TestKeyAndSubject(t *testing.T) {
	day := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		opts        report.Options
		wantKey     string
		wantSubject string
	}{
		{"the daily report", report.Options{Period: report.PeriodEnding(day, 1)},
			"reports/prod/2026-12-04.json", "AI Shell daily report prod 2026-12-04"},
		{"a week", report.Options{Period: report.PeriodEnding(day, 7)},
			"reports/prod/2026-12-04-7d.json", "AI Shell report prod 2026-11-28 to 2026-12-04"},
		{"a day against a chosen one", report.Options{Period: report.PeriodEnding(day, 1),
			Compare: day.AddDate(0, 0, -7)},
			"reports/prod/2026-12-04-vs-2026-11-27.json", "AI Shell daily report prod 2026-12-04"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := schedule.Key("prod", tt.opts, "json"); got != tt.wantKey {
				t.Errorf("key: got %s; want %s", got, tt.wantKey)
			}
			if got := schedule.Subject("prod", tt.opts.Period); got != tt.wantSubject {
				t.Errorf("subject: got %q; want %q", got, tt.wantSubject)
			}
		})
	}
	long := schedule.Subject(strings.Repeat("e", 120), report.PeriodEnding(day, 1))
	if len(long) != 100 {
		t.Errorf("subject of a long env: got %d characters; want 100", len(long))
	}
}

func TestMessage(t *testing.T) {
	const jsonURL, htmlURL = "s3://b/reports/stage/2026-12-04.json", "s3://b/reports/stage/2026-12-04.html"
	lines := strings.Repeat("| a row of the report | 12 | 13 |\n", 100) // 3,400 bytes
	tests := []struct {
		name     string
		markdown string
		limit    int
		wantCut  bool
	}{
		{"fits: whole, then where it is stored", lines, schedule.MaxMessageBytes, false},
		{"fits exactly", lines, len(lines) + 200, false},
		{"too long: cut at a line", lines, 1000, true},
		{"too long without a newline: cut between runes", strings.Repeat("é", 2000), 1001, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, cut := schedule.Message(tt.markdown, jsonURL, htmlURL, tt.limit)
			if cut != tt.wantCut {
				t.Errorf("cut: got %v; want %v", cut, tt.wantCut)
			}
			if len(msg) > tt.limit {
				t.Errorf("length: got %d bytes; want at most %d", len(msg), tt.limit)
			}
			if !utf8.ValidString(msg) {
				t.Errorf("message is not valid UTF-8")
			}
			if !strings.Contains(msg, jsonURL) || !strings.Contains(msg, htmlURL) {
				t.Errorf("message %q...: want it to name both objects", msg[max(0, len(msg)-200):])
			}
			if !cut && !strings.HasPrefix(msg, tt.markdown) {
				t.Errorf("message does not start with the whole markdown")
			}
			if cut {
				body, _, _ := strings.Cut(msg, "\n[The report is cut here")
				if !strings.HasPrefix(tt.markdown, body) || len(body) == 0 {
					t.Errorf("cut message: got a body of %d bytes that is not the markdown's start", len(body))
				}
				if strings.Contains(tt.markdown, "\n") && !strings.HasSuffix(body, "\n") {
					t.Errorf("cut message: body ends mid-line: %q", body[max(0, len(body)-40):])
				}
			}
		})
	}
}

func TestHandlePublishesYesterday(t *testing.T) {
	c, dir := corpusDir(t)
	var logs bytes.Buffer
	h, objs, tp := newHandler(dir, &logs)
	ctx := invocation(t)

	res, err := h.Handle(ctx, schedule.Event{Time: fired.Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}

	want := schedule.Result{Subject: "AI Shell daily report stage 2026-12-04", Env: "stage", From: "2026-12-04", To: "2026-12-04",
		JSONKey: "reports/stage/2026-12-04.json", HTMLKey: "reports/stage/2026-12-04.html",
		MessageID: "msg-1", Anomalies: res.Anomalies}
	if res != want || res.Anomalies == 0 {
		t.Errorf("result: got %+v; want %+v with the incident's anomalies", res, want)
	}

	// The stored JSON is what WriteJSON makes of the same day.
	r, err := report.Build(context.Background(), report.Dir{Path: dir},
		report.Options{Env: "stage", Period: yesterday})
	if err != nil {
		t.Fatal(err)
	}
	var wantJSON, wantMD bytes.Buffer
	report.WriteJSON(&wantJSON, r)
	report.WriteMarkdown(&wantMD, r)
	gotJSON := objs.objs["aishell-reports/reports/stage/2026-12-04.json"]
	if !bytes.Equal(gotJSON.body, wantJSON.Bytes()) || gotJSON.contentType != "application/json" {
		t.Errorf("json object (%s):\n%s\nwant:\n%s", gotJSON.contentType, gotJSON.body, wantJSON.Bytes())
	}
	var got report.Report
	if err := json.Unmarshal(gotJSON.body, &got); err != nil || got.Figures != c.Want(yesterday) {
		t.Errorf("json figures: got %+v (%v); want %+v", got.Figures, err, c.Want(yesterday))
	}
	page := objs.objs["aishell-reports/reports/stage/2026-12-04.html"]
	if !bytes.HasPrefix(page.body, []byte("<!DOCTYPE html>")) || page.contentType != "text/html; charset=utf-8" {
		t.Errorf("html object: got %s %.40q; want a page", page.contentType, page.body)
	}

	if len(tp.sent) != 1 {
		t.Fatalf("published: got %d messages; want 1", len(tp.sent))
	}
	in := tp.sent[0]
	if aws.ToString(in.Subject) != "AI Shell daily report stage 2026-12-04" ||
		aws.ToString(in.TopicArn) != h.TopicARN {
		t.Errorf("publish: got subject %q to %s", aws.ToString(in.Subject), aws.ToString(in.TopicArn))
	}
	if msg := aws.ToString(in.Message); !strings.HasPrefix(msg, wantMD.String()) ||
		!strings.Contains(msg, "s3://aishell-reports/reports/stage/2026-12-04.json") {
		t.Errorf("message: got %q; want the markdown, then where the report is", msg)
	}

	lines := logLines(t, &logs)
	checkIDs(t, lines)
	last := lines[len(lines)-1]
	if last["event"] != schedule.EventPublished || last["jsonKey"] != want.JSONKey || last["level"] != "info" {
		t.Errorf("last log line: got %v; want %s naming the key", last, schedule.EventPublished)
	}
}

func TestHandleCutsALongMessage(t *testing.T) {
	_, dir := corpusDir(t)
	var logs bytes.Buffer
	h, _, tp := newHandler(dir, &logs)
	h.MaxMessageBytes = 2000

	res, err := h.Handle(invocation(t), schedule.Event{Date: "2026-12-04", Range: "5d"})
	if err != nil {
		t.Fatal(err)
	}
	msg := aws.ToString(tp.sent[0].Message)
	if !res.Truncated || len(msg) > 2000 || !strings.Contains(msg, "The report is cut here") ||
		!strings.Contains(msg, "s3://aishell-reports/reports/stage/2026-12-04-5d.json") {
		t.Errorf("got truncated %v and a message of %d bytes:\n%s\nwant one cut to 2000 bytes, with a note "+
			"and the key", res.Truncated, len(msg), msg)
	}
	lines := logLines(t, &logs)
	checkIDs(t, lines)
	var truncated int
	for _, l := range lines {
		if l["event"] == schedule.EventTruncated {
			truncated++
		}
	}
	if truncated != 1 {
		t.Errorf("%s lines: got %d; want 1", schedule.EventTruncated, truncated)
	}
}

func TestHandleFailsAndLogsOnce(t *testing.T) {
	_, dir := corpusDir(t)
	tests := []struct {
		name        string
		ev          schedule.Event
		breakIt     func(h *schedule.Handler, o *objectStore, tp *topic)
		wantErr     string
		wantObjects int
		wantSent    int
	}{
		{"bad event", schedule.Event{Date: "tomorrow"}, func(*schedule.Handler, *objectStore, *topic) {},
			"read event: date", 0, 0},
		{"logs unreadable", schedule.Event{}, func(h *schedule.Handler, _ *objectStore, _ *topic) {
			h.Source = brokenSource{}
		}, "build report: read events of 2026-12-04: AccessDeniedException", 0, 0},
		{"json not stored", schedule.Event{}, func(_ *schedule.Handler, o *objectStore, _ *topic) {
			o.fail = "reports/stage/2026-12-04.json"
		}, "store report s3://aishell-reports/reports/stage/2026-12-04.json: AccessDenied", 0, 0},
		{"html not stored", schedule.Event{}, func(_ *schedule.Handler, o *objectStore, _ *topic) {
			o.fail = "reports/stage/2026-12-04.html"
		}, "store report s3://aishell-reports/reports/stage/2026-12-04.html: AccessDenied", 1, 0},
		{"not published", schedule.Event{}, func(_ *schedule.Handler, _ *objectStore, tp *topic) {
			tp.fail = true
		}, "publish report to arn:aws:sns:us-east-1:123456789012:aishell-stage-report: AuthorizationError", 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h, objs, tp := newHandler(dir, &logs)
			tt.breakIt(h, objs, tp)

			_, err := h.Handle(invocation(t), tt.ev)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error: got %v; want %q", err, tt.wantErr)
			}
			if len(objs.objs) != tt.wantObjects || len(tp.sent) != tt.wantSent {
				t.Errorf("stored %d objects, sent %d messages; want %d, %d",
					len(objs.objs), len(tp.sent), tt.wantObjects, tt.wantSent)
			}
			lines := logLines(t, &logs)
			checkIDs(t, lines)
			var failed []map[string]any
			for _, l := range lines {
				if l["level"] == "error" {
					failed = append(failed, l)
				}
			}
			if len(failed) != 1 || failed[0]["event"] != schedule.EventFailed || failed[0]["message"] != err.Error() {
				t.Errorf("error lines: got %v; want one %s with the error", failed, schedule.EventFailed)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name       string
		vars       map[string]string
		wantGroups string
		wantErr    []string
	}{
		{"groups of the environment", map[string]string{"ENV_NAME": "prod", "REPORT_BUCKET": "b",
			"REPORT_TOPIC_ARN": "arn:t"}, "/aishell/prod/relay,/aishell/prod/lambdas", nil},
		{"groups named", map[string]string{"ENV_NAME": "prod", "REPORT_BUCKET": "b", "REPORT_TOPIC_ARN": "arn:t",
			"REPORT_LOG_GROUPS": " /x/relay, /x/lambdas ,"}, "/x/relay,/x/lambdas", nil},
		{"nothing set", nil, "", []string{"ENV_NAME", "REPORT_BUCKET", "REPORT_TOPIC_ARN"}},
		{"env with a slash", map[string]string{"ENV_NAME": "a/b", "REPORT_BUCKET": "b", "REPORT_TOPIC_ARN": "t"},
			"", []string{"ENV_NAME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := schedule.ConfigFromEnv(func(k string) string { return tt.vars[k] })
			for _, name := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), name) {
					t.Errorf("error: got %v; want it to name %s", err, name)
				}
			}
			if tt.wantErr != nil {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cfg.LogGroups, ","); got != tt.wantGroups {
				t.Errorf("log groups: got %s; want %s", got, tt.wantGroups)
			}
		})
	}
}

func TestRouteRuntimeLog(t *testing.T) {
	t.Cleanup(func() {
		log.SetOutput(os.Stderr)
		log.SetFlags(log.LstdFlags)
	})
	tests := []struct {
		name      string
		print     string
		wantLevel string
	}{
		{"the echo of a returned error is debug", `{"errorMessage":"publish report: x","errorType":"wrapError"}`,
			"debug"},
		{"a panic is a warning", `{"errorMessage":"boom","errorType":"string","stackTrace":[{"path":"a.go"}]}`,
			"warn"},
		{"other text is a warning", "runtime API client failed to close", "warn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			schedule.RouteRuntimeLog(logging.New(&out, "report", slog.LevelDebug))
			log.Printf("%s", tt.print)
			lines := logLines(t, &out)
			if len(lines) != 1 || lines[0]["level"] != tt.wantLevel || lines[0]["event"] != schedule.EventRuntime ||
				lines[0]["message"] != tt.print {
				t.Errorf("got %v; want one %s line at %s with the text", lines, schedule.EventRuntime, tt.wantLevel)
			}
		})
	}
}
