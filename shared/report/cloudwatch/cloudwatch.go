// Package cloudwatch reads the report's log events from CloudWatch Logs: it
// pages through FilterLogEvents on the environment's log groups over the
// report's time range, paced within the API's rate, retrying throttled
// calls, and hands each line to the same parser as the local files.
package cloudwatch

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
)

// API limits of FilterLogEvents.
const (
	// MaxPageSize is the most events one call may ask for.
	MaxPageSize = 10000
	// DefaultPace keeps calls at 5 a second, FilterLogEvents' default
	// quota per account and Region.
	DefaultPace = 200 * time.Millisecond
	// DefaultSlack widens the queried time range: CloudWatch stamps an
	// event when it takes the line in, a moment after the line's own
	// timestamp, which is what the report selects on.
	DefaultSlack = 2 * time.Minute
)

// DefaultLogGroups are the log groups of an environment: the relay's and the
// Lambdas', /aishell/<env>/relay and /aishell/<env>/lambdas.
func DefaultLogGroups(env string) []string {
	return []string{"/aishell/" + env + "/relay", "/aishell/" + env + "/lambdas"}
}

// FilterPattern selects, on CloudWatch's side, the lines the report can
// count: error-level lines (access denied may come from any event) and the
// events of report.CountedEvents. The report filters again in Go, so a
// service that ignores patterns (moto does) gives the same figures.
func FilterPattern() string {
	parts := []string{`$.level = "error"`}
	for _, name := range report.CountedEvents {
		parts = append(parts, fmt.Sprintf(`$.%s = "%s"`, logging.KeyEvent, name))
	}
	return "{ " + strings.Join(parts, " || ") + " }"
}

// Source reads log events from CloudWatch Logs.
type Source struct {
	Client    cloudwatchlogs.FilterLogEventsAPIClient
	LogGroups []string
	// FilterPattern is sent with every call; empty sends none.
	FilterPattern string
	// PageSize is the Limit of each call; 0 means MaxPageSize.
	PageSize int32
	// Pace is the least time between two calls; 0 means no pacing.
	Pace time.Duration
	// Slack widens the queried range on both sides; see DefaultSlack.
	Slack time.Duration
	// Progress, when not nil, gets a line per log group, rewritten as
	// pages arrive. Give it a terminal only.
	Progress io.Writer
}

// New returns a source on the given log groups with the default pattern,
// page size, pace and slack.
func New(client cloudwatchlogs.FilterLogEventsAPIClient, groups []string) *Source {
	return &Source{
		Client:        client,
		LogGroups:     groups,
		FilterPattern: FilterPattern(),
		PageSize:      MaxPageSize,
		Pace:          DefaultPace,
		Slack:         DefaultSlack,
	}
}

// Scan reads every log group over [from-Slack, to+Slack) and hands on the
// events whose own timestamp is in [from, to).
func (s *Source) Scan(ctx context.Context, from, to time.Time,
	fn func(report.Event)) (report.ScanStats, error) {
	var stats report.ScanStats
	var last time.Time
	for _, group := range s.LogGroups {
		st, err := s.scanGroup(ctx, group, from, to, fn, &last)
		stats = stats.Add(st)
		if err != nil {
			return stats, err
		}
	}
	return stats, nil
}

func (s *Source) scanGroup(ctx context.Context, group string, from, to time.Time,
	fn func(report.Event), last *time.Time) (report.ScanStats, error) {
	var stats report.ScanStats
	in := &cloudwatchlogs.FilterLogEventsInput{
		LogGroupName: aws.String(group),
		StartTime:    aws.Int64(from.Add(-s.Slack).UnixMilli()),
		// EndTime is inclusive.
		EndTime: aws.Int64(to.Add(s.Slack).UnixMilli() - 1),
		Limit:   aws.Int32(s.pageSize()),
	}
	if s.FilterPattern != "" {
		in.FilterPattern = aws.String(s.FilterPattern)
	}

	pages := 0
	for {
		if err := s.pace(ctx, last); err != nil {
			return stats, err
		}
		out, err := s.Client.FilterLogEvents(ctx, in)
		if err != nil {
			return stats, fmt.Errorf("filter log events of %s: %w", group, err)
		}
		pages++
		for _, ev := range out.Events {
			ingested := time.UnixMilli(aws.ToInt64(ev.Timestamp))
			stats.Feed([]byte(aws.ToString(ev.Message)), ingested, from, to, fn)
		}
		if s.Progress != nil {
			fmt.Fprintf(s.Progress, "\r%s: %d pages, %d lines", group, pages, stats.Lines)
		}

		// An empty page with a token means "more to search", so only the
		// token ends the loop; a repeated token would loop for ever.
		next := aws.ToString(out.NextToken)
		if next == "" || next == aws.ToString(in.NextToken) {
			break
		}
		in.NextToken = out.NextToken
	}
	if s.Progress != nil {
		fmt.Fprintln(s.Progress)
	}
	return stats, nil
}

func (s *Source) pageSize() int32 {
	if s.PageSize <= 0 || s.PageSize > MaxPageSize {
		return MaxPageSize
	}
	return s.PageSize
}

// pace waits until Pace has passed since *last, then sets *last to now.
func (s *Source) pace(ctx context.Context, last *time.Time) error {
	if wait := s.Pace - time.Since(*last); s.Pace > 0 && !last.IsZero() && wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	*last = time.Now()
	return nil
}

// ClientOptions say how to reach CloudWatch Logs.
type ClientOptions struct {
	// Region; the SDK's default (AWS_REGION, the shared config) when empty.
	Region string
	// Endpoint overrides the service's endpoint, for example moto's. On a
	// loopback address the client signs with fixed fake credentials, so
	// that nothing goes looking for real ones.
	Endpoint string
	// HTTPClient replaces the SDK's, for this service only: setting it on
	// the shared config fails when AWS_CA_BUNDLE is set.
	HTTPClient *http.Client
	// MaxAttempts per call, throttled retries included; 0 means 10.
	MaxAttempts int
	// MaxBackoff between attempts; 0 means 20 s.
	MaxBackoff time.Duration
}

// NewClient returns a CloudWatch Logs client that retries throttled calls
// with exponential back-off and no retry quota: a report is one patient
// reader, better slow than failed.
func NewClient(ctx context.Context, o ClientOptions) (*cloudwatchlogs.Client, error) {
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if isLoopback(o.Endpoint) {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider("fake", "fake", "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("load aws config: no region; set AWS_REGION")
	}

	attempts := o.MaxAttempts
	if attempts <= 0 {
		attempts = 10
	}
	backoff := o.MaxBackoff
	if backoff <= 0 {
		backoff = retry.DefaultMaxBackoff
	}
	return cloudwatchlogs.NewFromConfig(cfg, func(co *cloudwatchlogs.Options) {
		if o.Endpoint != "" {
			co.BaseEndpoint = aws.String(o.Endpoint)
		}
		if o.HTTPClient != nil {
			co.HTTPClient = o.HTTPClient
		}
		co.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = attempts
			so.MaxBackoff = backoff
			so.RateLimiter = ratelimit.None
		})
	}), nil
}

// isLoopback reports whether endpoint is a URL on this machine.
func isLoopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}
