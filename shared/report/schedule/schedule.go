// Package schedule runs the daily report (R14) as a scheduled Lambda: an
// EventBridge schedule invokes it once a day, and it builds the report of
// the previous UTC day (or of the day and range the event names) from the
// environment's CloudWatch log groups, stores the JSON and HTML forms in S3
// and publishes the markdown form to an SNS topic.
//
// Every failure fails the invocation, so that the schedule's retries and
// the Lambda's error alarm see it, and is logged once, as report_failed.
// Every log line of an invocation carries its requestId and traceId.
package schedule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/cloudwatch"
	"github.com/aishell/aishell/shared/tracing"
)

// Events of the Lambda's log lines.
const (
	EventPublished        = "report_published"
	EventFailed           = "report_failed"
	EventTruncated        = "report_message_truncated"
	EventLogLinesUnparsed = "log_lines_unparsed"
)

// MaxDays bounds an event's range, as the command bounds --range.
const MaxDays = 366

// MaxMessageBytes is the most an SNS message may hold: 256 KiB of UTF-8.
const MaxMessageBytes = 256 << 10

// maxSubject is the most characters an SNS subject may have.
const maxSubject = 100

// Event is what the Lambda is invoked with. The schedule sends
// EventBridge's own event, of which only Time is read; an operator may
// invoke it by hand with a day, a range and a baseline, as
// {"date":"2026-12-03","range":"7d","compare":"2026-11-26"}.
type Event struct {
	// Date is the last UTC day reported, YYYY-MM-DD; empty means the day
	// before Time.
	Date string `json:"date"`
	// Range is the number of days ending at Date, as "7d" or "7"; empty
	// means one.
	Range string `json:"range"`
	// Compare is the last day of the baseline period, YYYY-MM-DD; empty
	// means the period just before.
	Compare string `json:"compare"`
	// Time is EventBridge's time of the scheduled event (RFC 3339). A retry
	// hours later still reports the day the schedule meant. Empty means
	// the clock's now.
	Time string `json:"time"`
}

// Result is the invocation's answer: what was reported and where it went.
type Result struct {
	Subject   string `json:"subject"`
	Env       string `json:"env"`
	From      string `json:"from"`
	To        string `json:"to"`
	JSONKey   string `json:"jsonKey"`
	HTMLKey   string `json:"htmlKey"`
	MessageID string `json:"messageId"`
	Truncated bool   `json:"truncated"`
	Anomalies int    `json:"anomalies"`
}

// Config is the Lambda's setting, from its environment.
type Config struct {
	// Env names the environment (ENV_NAME).
	Env string
	// LogGroups are read for the report (REPORT_LOG_GROUPS, comma
	// separated); cloudwatch.DefaultLogGroups(Env) when unset.
	LogGroups []string
	// Bucket receives the JSON and HTML forms (REPORT_BUCKET).
	Bucket string
	// TopicARN receives the markdown form (REPORT_TOPIC_ARN).
	TopicARN string
}

// ConfigFromEnv reads the Config, naming every variable that is missing or
// wrong.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Env:      getenv("ENV_NAME"),
		Bucket:   getenv("REPORT_BUCKET"),
		TopicARN: getenv("REPORT_TOPIC_ARN"),
	}
	var errs []error
	if c.Env == "" || strings.ContainsAny(c.Env, "/ ") {
		errs = append(errs, fmt.Errorf("ENV_NAME: want a name such as stage, got %q", c.Env))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("REPORT_BUCKET is not set"))
	}
	if c.TopicARN == "" {
		errs = append(errs, errors.New("REPORT_TOPIC_ARN is not set"))
	}
	for _, g := range strings.Split(getenv("REPORT_LOG_GROUPS"), ",") {
		if g = strings.TrimSpace(g); g != "" {
			c.LogGroups = append(c.LogGroups, g)
		}
	}
	if len(c.LogGroups) == 0 {
		c.LogGroups = cloudwatch.DefaultLogGroups(c.Env)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("read environment: %w", err)
	}
	return c, nil
}

// ObjectPutter stores an object; *s3.Client is one.
type ObjectPutter interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// Publisher publishes to a topic; *sns.Client is one.
type Publisher interface {
	Publish(ctx context.Context, in *sns.PublishInput, opts ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// Handler is the Lambda's handler.
type Handler struct {
	Env      string
	Source   report.Source // the events; CloudWatch Logs in AWS
	Objects  ObjectPutter
	Topic    Publisher
	Bucket   string
	TopicARN string
	// MaxMessageBytes bounds the SNS message; 0 means MaxMessageBytes.
	MaxMessageBytes int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	Log *slog.Logger
}

// New returns the handler of cfg on AWS clients: logs reads CloudWatch
// Logs (see LogsClient), objects writes to S3, topic publishes to SNS.
func New(cfg Config, logs cloudwatchlogs.FilterLogEventsAPIClient, objects ObjectPutter,
	topic Publisher, log *slog.Logger) *Handler {
	return &Handler{
		Env:      cfg.Env,
		Source:   cloudwatch.New(logs, cfg.LogGroups),
		Objects:  objects,
		Topic:    topic,
		Bucket:   cfg.Bucket,
		TopicARN: cfg.TopicARN,
		Log:      log,
	}
}

// LogsClient returns a CloudWatch Logs client of cfg that retries throttled
// calls as the command's client does (cloudwatch.NewClient): up to 10
// attempts with exponential back-off and no retry quota, since a report is
// one patient reader, better slow than failed.
func LogsClient(cfg aws.Config) *cloudwatchlogs.Client {
	return cloudwatchlogs.NewFromConfig(cfg, func(o *cloudwatchlogs.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 10
			so.MaxBackoff = retry.DefaultMaxBackoff
			so.RateLimiter = ratelimit.None
		})
	})
}

// Handle makes, stores and publishes the report the event asks for. It
// fails when any step fails; the error names the step.
func (h *Handler) Handle(ctx context.Context, ev Event) (Result, error) {
	start := h.now()
	log := h.invocationLog(ctx)
	res, err := h.handle(ctx, log, ev, start)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, EventFailed, err.Error(),
			logging.Duration(h.now().Sub(start)))
		return Result{}, err
	}
	logging.Event(ctx, log, slog.LevelInfo, EventPublished,
		res.Subject+" published",
		slog.String("from", res.From), slog.String("to", res.To),
		slog.String("jsonKey", res.JSONKey), slog.String("htmlKey", res.HTMLKey),
		slog.String("messageId", res.MessageID), slog.Bool("truncated", res.Truncated),
		slog.Int("anomalies", res.Anomalies), logging.Duration(h.now().Sub(start)))
	return res, nil
}

func (h *Handler) handle(ctx context.Context, log *slog.Logger, ev Event, now time.Time) (Result, error) {
	opts, err := Options(ev, h.Env, now)
	if err != nil {
		return Result{}, fmt.Errorf("read event: %w", err)
	}

	r, err := report.Build(ctx, h.Source, opts)
	if err != nil {
		return Result{}, fmt.Errorf("build report: %w", err)
	}
	if r.Scanned.Unparsed > 0 {
		logging.Event(ctx, log, slog.LevelWarn, EventLogLinesUnparsed, "log lines skipped",
			slog.Int("unparsed", r.Scanned.Unparsed), slog.Int("lines", r.Scanned.Lines))
	}

	var js, page, md bytes.Buffer
	if err := errors.Join(report.WriteJSON(&js, r), report.WriteHTML(&page, r),
		report.WriteMarkdown(&md, r)); err != nil {
		return Result{}, fmt.Errorf("render report: %w", err)
	}

	res := Result{
		Subject: Subject(h.Env, opts.Period),
		Env:     h.Env, From: r.From, To: r.To,
		JSONKey:   Key(h.Env, opts, "json"),
		HTMLKey:   Key(h.Env, opts, "html"),
		Anomalies: len(r.Anomalies),
	}
	// The objects first: the message points at them.
	if err := h.put(ctx, res.JSONKey, "application/json", js.Bytes()); err != nil {
		return Result{}, err
	}
	if err := h.put(ctx, res.HTMLKey, "text/html; charset=utf-8", page.Bytes()); err != nil {
		return Result{}, err
	}

	msg, cut := Message(md.String(), h.objectURL(res.JSONKey), h.objectURL(res.HTMLKey), h.maxMessage())
	if cut {
		res.Truncated = true
		logging.Event(ctx, log, slog.LevelWarn, EventTruncated,
			"markdown report cut to fit an SNS message; the whole report is in S3",
			slog.Int("markdownBytes", md.Len()), slog.Int("messageBytes", len(msg)),
			slog.String("jsonKey", res.JSONKey))
	}
	out, err := h.Topic.Publish(ctx, &sns.PublishInput{
		TopicArn: aws.String(h.TopicARN),
		Subject:  aws.String(res.Subject),
		Message:  aws.String(msg),
	})
	if err != nil {
		return Result{}, fmt.Errorf("publish report to %s: %w", h.TopicARN, err)
	}
	res.MessageID = aws.ToString(out.MessageId)
	return res, nil
}

func (h *Handler) put(ctx context.Context, key, contentType string, body []byte) error {
	_, err := h.Objects.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(h.Bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(body),
		ContentType: aws.String(contentType),
	})
	if err != nil {
		return fmt.Errorf("store report %s: %w", h.objectURL(key), err)
	}
	return nil
}

func (h *Handler) objectURL(key string) string { return "s3://" + h.Bucket + "/" + key }

func (h *Handler) maxMessage() int {
	if h.MaxMessageBytes <= 0 || h.MaxMessageBytes > MaxMessageBytes {
		return MaxMessageBytes
	}
	return h.MaxMessageBytes
}

func (h *Handler) now() time.Time {
	if h.Now == nil {
		return time.Now()
	}
	return h.Now()
}

// invocationLog is the handler's logger with the invocation's requestId
// and traceId.
func (h *Handler) invocationLog(ctx context.Context) *slog.Logger {
	log := logging.Module(h.Log, "schedule")
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		log = log.With(logging.KeyRequestID, lc.AwsRequestID)
	}
	if id := tracing.TraceID(ctx); id != "" {
		log = log.With(logging.KeyTraceID, id)
	}
	return log.With("env", h.Env)
}

// Options turns an event into what to report on for env, now: by default
// the UTC day before the event's time (or now). The rules are the
// command's: the last day not after today, 1 to MaxDays days, a baseline
// that ends before the period.
func Options(ev Event, env string, now time.Time) (report.Options, error) {
	if ev.Time != "" {
		t, err := time.Parse(time.RFC3339, ev.Time)
		if err != nil {
			return report.Options{}, fmt.Errorf("time: want RFC 3339, got %q", ev.Time)
		}
		now = t
	}
	today := now.UTC().Truncate(24 * time.Hour)
	last := today.AddDate(0, 0, -1)
	if ev.Date != "" {
		d, err := time.Parse(time.DateOnly, ev.Date)
		if err != nil {
			return report.Options{}, fmt.Errorf("date: want YYYY-MM-DD, got %q", ev.Date)
		}
		if d.After(today) {
			return report.Options{}, fmt.Errorf("date: %s is in the future", ev.Date)
		}
		last = d
	}
	days := 1
	if ev.Range != "" {
		n, err := strconv.Atoi(strings.TrimSuffix(ev.Range, "d"))
		if err != nil || n < 1 || n > MaxDays {
			return report.Options{}, fmt.Errorf("range: want a number of days from 1 to %d such as 7d, got %q",
				MaxDays, ev.Range)
		}
		days = n
	}
	opts := report.Options{Env: env, Period: report.PeriodEnding(last, days)}
	if ev.Compare != "" {
		c, err := time.Parse(time.DateOnly, ev.Compare)
		if err != nil {
			return report.Options{}, fmt.Errorf("compare: want YYYY-MM-DD, got %q", ev.Compare)
		}
		if !c.Before(opts.Period.Start()) {
			return report.Options{}, fmt.Errorf("compare: %s is not before the reported period %s",
				ev.Compare, opts.Period)
		}
		opts.Compare = c
	}
	return opts, nil
}

// Key is the S3 key of one form of a report (ext "json" or "html"):
// reports/ENV/DATE.EXT for the daily report, DATE its last day. A longer
// range adds its length (DATE-7d) and a chosen baseline its last day
// (DATE-vs-2026-11-26), so that a report asked for by hand never
// overwrites the daily one.
func Key(env string, opts report.Options, ext string) string {
	name := opts.Period.Last().Format(time.DateOnly)
	if opts.Period.Days > 1 {
		name += fmt.Sprintf("-%dd", opts.Period.Days)
	}
	if !opts.Compare.IsZero() {
		name += "-vs-" + opts.Compare.UTC().Format(time.DateOnly)
	}
	return "reports/" + env + "/" + name + "." + ext
}

// Subject is the SNS subject of a report: "AI Shell daily report ENV DATE",
// or "AI Shell report ENV FROM to TO" for a range, at most 100 characters.
func Subject(env string, p report.Period) string {
	s := "AI Shell daily report " + env + " " + p.String()
	if p.Days > 1 {
		s = "AI Shell report " + env + " " + p.String()
	}
	if len(s) > maxSubject {
		s = s[:maxSubject]
	}
	return s
}

// Message is the SNS message of a markdown report: the markdown, then where
// the whole report is stored. When that is longer than limit bytes, the
// markdown is cut at the end of a line and a note says so and where to find
// the rest; cut reports whether it was.
func Message(markdown, jsonURL, htmlURL string, limit int) (msg string, cut bool) {
	where := fmt.Sprintf("\n---\nThe whole report: %s (JSON) and %s (HTML, with charts).\n", jsonURL, htmlURL)
	if len(markdown)+len(where) <= limit {
		return markdown + where, false
	}
	note := fmt.Sprintf("\n[The report is cut here: it is longer than an SNS message may be (%d bytes).]\n",
		limit)
	room := limit - len(where) - len(note)
	if room < 0 {
		room = 0
	}
	// A newline is never inside a UTF-8 sequence, so cutting after one
	// keeps the text valid; without one, cut before a sequence starts.
	body := markdown[:room]
	if i := strings.LastIndexByte(body, '\n'); i >= 0 {
		body = body[:i+1]
	} else {
		for len(body) > 0 && !startsRune(markdown[len(body)]) {
			body = body[:len(body)-1]
		}
	}
	return body + note + where, true
}

// startsRune reports whether b begins a UTF-8 sequence (it is not a
// continuation byte).
func startsRune(b byte) bool { return b&0xC0 != 0x80 }
