// Command report prints the daily report of R14 for a day or a range of UTC
// days, from the local JSON log files ($DATA_DIR/logs) or from CloudWatch
// Logs, as markdown, JSON or HTML. See docs/report.md.
//
//	go run ./lambdas/report --date 2026-12-04 --range 7d --format md
//	go run ./lambdas/report --source aws --env stage --format json
//
// Where AWS_LAMBDA_RUNTIME_API is set, the same binary is the scheduled
// report Lambda (package shared/report/schedule): `make lambdas` builds it
// as bootstrap for provided.al2023.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"golang.org/x/term"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/events"
	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/cloudwatch"
	"github.com/aishell/aishell/shared/report/schedule"
)

// Events of the command's own log lines on stderr.
const (
	eventReportFailed     = "report_failed"
	eventLogLinesUnparsed = "log_lines_unparsed"
)

// maxDays bounds --range: a year of days is already far more than a
// report reads at once.
const maxDays = 366

func main() {
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		lambdaMain()
		return
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv, time.Now()))
}

// lambdaMain runs the binary as the scheduled report Lambda.
func lambdaMain() {
	ctx := context.Background()
	log := logging.New(os.Stdout, "report", logging.LevelFromEnv())
	schedule.RouteRuntimeLog(log)
	h, err := newHandler(ctx, log, nil)
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, "lambda_init_failed", "report Lambda cannot start",
			slog.String(events.FieldReason, err.Error()))
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}

// newHandler wires the Lambda's handler from the environment
// (schedule.ConfigFromEnv) to AWS clients that X-Ray instruments. rec, when
// set (tests), records the AWS operations called.
func newHandler(ctx context.Context, log *slog.Logger, rec *awsops.Recorder) (*schedule.Handler, error) {
	cfg, err := schedule.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsclient.Load(ctx, awsops.ReportLambda, rec)
	if err != nil {
		return nil, err
	}
	return schedule.New(cfg, schedule.LogsClient(awsCfg), s3.NewFromConfig(awsCfg),
		sns.NewFromConfig(awsCfg), log), nil
}

// config is what the flags say.
type config struct {
	opts     report.Options
	format   string
	source   string
	logs     string
	groups   []string
	endpoint string
	region   string
}

// run is the command: it returns 0 on success, 1 when the report could not
// be made, and 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer,
	getenv func(string) string, now time.Time) int {
	cfg, err := parseFlags(args, stderr, getenv, now)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "report: %v\nRun with -h for the flags.\n", err)
		return 2
	}
	log := logging.Module(logging.New(stderr, "report", logging.LevelFromEnv()), "main")

	r, err := build(ctx, cfg, stderr)
	if err == nil {
		err = write(stdout, cfg.format, r)
	}
	if err != nil {
		logging.Event(ctx, log, slog.LevelError, eventReportFailed, err.Error())
		return 1
	}
	if r.Scanned.Unparsed > 0 {
		logging.Event(ctx, log, slog.LevelWarn, eventLogLinesUnparsed, "log lines skipped",
			slog.Int("unparsed", r.Scanned.Unparsed), slog.Int("lines", r.Scanned.Lines))
	}
	return 0
}

func build(ctx context.Context, cfg config, stderr io.Writer) (*report.Report, error) {
	var src report.Source = report.Dir{Path: cfg.logs}
	if cfg.source == "aws" {
		client, err := cloudwatch.NewClient(ctx, cloudwatch.ClientOptions{
			Region: cfg.region, Endpoint: cfg.endpoint,
		})
		if err != nil {
			return nil, err
		}
		cw := cloudwatch.New(client, cfg.groups)
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			cw.Progress = f
		}
		src = cw
	}
	return report.Build(ctx, src, cfg.opts)
}

func write(w io.Writer, format string, r *report.Report) error {
	switch format {
	case "json":
		return report.WriteJSON(w, r)
	case "html":
		return report.WriteHTML(w, r)
	default:
		return report.WriteMarkdown(w, r)
	}
}

// groupsFlag collects a repeatable --log-group.
type groupsFlag []string

func (g *groupsFlag) String() string     { return strings.Join(*g, ",") }
func (g *groupsFlag) Set(v string) error { *g = append(*g, v); return nil }

func parseFlags(args []string, stderr io.Writer, getenv func(string) string, now time.Time) (config, error) {
	dataDir := getenv("DATA_DIR")
	if dataDir == "" {
		dataDir = ".data"
	}
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	date := fs.String("date", "", "last UTC day of the report, YYYY-MM-DD (default yesterday)")
	rng := fs.String("range", "1d", "number of days ending at --date, as 7d or 7")
	env := fs.String("env", "local", "environment: names the report and the default log groups")
	format := fs.String("format", "md", "output: md, json or html")
	compare := fs.String("compare", "", "last day of the period to compare with, YYYY-MM-DD "+
		"(default the period just before)")
	source := fs.String("source", "local", "where the logs are: local (files) or aws (CloudWatch Logs)")
	logs := fs.String("logs", filepath.Join(dataDir, "logs"), "folder of the local JSON log files")
	var groups groupsFlag
	fs.Var(&groups, "log-group", "CloudWatch log group to read, repeatable "+
		"(default /aishell/<env>/relay and /aishell/<env>/lambdas)")
	endpoint := fs.String("endpoint", "",
		"CloudWatch Logs endpoint override, e.g. moto's http://127.0.0.1:PORT")
	region := fs.String("region", "", "AWS Region (default from AWS_REGION or the shared config)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	today := now.UTC().Truncate(24 * time.Hour)
	last := today.AddDate(0, 0, -1)
	if *date != "" {
		d, err := time.Parse(time.DateOnly, *date)
		if err != nil {
			return config{}, fmt.Errorf("--date: want YYYY-MM-DD, got %q", *date)
		}
		if d.After(today) {
			return config{}, fmt.Errorf("--date: %s is in the future", *date)
		}
		last = d
	}
	days, err := strconv.Atoi(strings.TrimSuffix(*rng, "d"))
	if err != nil || days < 1 || days > maxDays {
		return config{}, fmt.Errorf("--range: want a number of days from 1 to %d such as 7d, got %q",
			maxDays, *rng)
	}
	cfg := config{
		opts:     report.Options{Env: *env, Period: report.PeriodEnding(last, days)},
		format:   *format,
		source:   *source,
		logs:     *logs,
		groups:   groups,
		endpoint: *endpoint,
		region:   *region,
	}
	if *compare != "" {
		c, err := time.Parse(time.DateOnly, *compare)
		if err != nil {
			return config{}, fmt.Errorf("--compare: want YYYY-MM-DD, got %q", *compare)
		}
		if !c.Before(cfg.opts.Period.Start()) {
			return config{}, fmt.Errorf("--compare: %s is not before the reported period %s",
				*compare, cfg.opts.Period)
		}
		cfg.opts.Compare = c
	}
	switch *format {
	case "md", "json", "html":
	default:
		return config{}, fmt.Errorf("--format: want md, json or html, got %q", *format)
	}
	switch *source {
	case "local", "aws":
	default:
		return config{}, fmt.Errorf("--source: want local or aws, got %q", *source)
	}
	if *env == "" || strings.ContainsAny(*env, "/ ") {
		return config{}, fmt.Errorf("--env: want a name such as stage, got %q", *env)
	}
	if len(cfg.groups) == 0 {
		cfg.groups = cloudwatch.DefaultLogGroups(*env)
	}
	return cfg, nil
}
