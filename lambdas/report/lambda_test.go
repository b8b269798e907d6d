package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/report"
	"github.com/aishell/aishell/shared/report/cloudwatch/cloudwatchtest"
	"github.com/aishell/aishell/shared/report/corpus"
	"github.com/aishell/aishell/shared/report/schedule"
)

// awsEnv aims the SDK's default chain at moto, with fake credentials and
// no shared config files, for this process or a child.
func awsEnv() map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL":            moto.URL,
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "testing",
		"AWS_SECRET_ACCESS_KEY":       "testing",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	}
}

// motoConfig is the tests' own AWS configuration on moto; its calls are
// not recorded.
func motoConfig() aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(moto.URL),
	}
}

// target is where a report Lambda of one environment delivers: a bucket,
// and a topic with a queue subscribed to it, to read what was published.
type target struct {
	env, bucket, topicARN, queueURL string
	day                             string // yesterday, the corpus's incident day
	corpus                          *corpus.Corpus
}

// newTarget puts a corpus of the three days before today into the log
// groups of env (CloudWatch takes no events older than 14 days) and
// creates the bucket, the topic and the queue.
func newTarget(t *testing.T, env string) target {
	t.Helper()
	ctx := context.Background()
	logs, err := moto.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC()
	c := corpus.Generate(corpus.Options{First: today.AddDate(0, 0, -3), Days: 3, Seed: 9, BadDay: 2})
	if _, err := cloudwatchtest.PutCorpus(ctx, logs, "/aishell/"+env, c); err != nil {
		t.Fatal(err)
	}

	cfg := motoConfig()
	tg := target{env: env, bucket: "aishell-" + env + "-reports", corpus: c,
		day: today.AddDate(0, 0, -1).Format(time.DateOnly)}
	if _, err := s3.NewFromConfig(cfg).CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket: aws.String(tg.bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	topic, err := sns.NewFromConfig(cfg).CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String("report-" + env)})
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	tg.topicARN = aws.ToString(topic.TopicArn)
	q := sqs.NewFromConfig(cfg)
	queue, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("report-" + env)})
	if err != nil {
		t.Fatalf("create queue: %v", err)
	}
	tg.queueURL = aws.ToString(queue.QueueUrl)
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: queue.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatalf("queue arn: %v", err)
	}
	if _, err := sns.NewFromConfig(cfg).Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: topic.TopicArn, Protocol: aws.String("sqs"),
		Endpoint: aws.String(attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)])}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return tg
}

// object reads an object of the target's bucket.
func (tg target) object(t *testing.T, key string) []byte {
	t.Helper()
	out, err := s3.NewFromConfig(motoConfig()).GetObject(context.Background(), &s3.GetObjectInput{
		Bucket: aws.String(tg.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// notification is what SNS delivers to the queue.
type notification struct {
	Subject string
	Message string
}

// published takes the messages published since the last call.
func (tg target) published(t *testing.T) []notification {
	t.Helper()
	q := sqs.NewFromConfig(motoConfig())
	out, err := q.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(tg.queueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 5})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	var ns []notification
	for _, m := range out.Messages {
		if _, err := q.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{
			QueueUrl: aws.String(tg.queueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
			t.Fatal(err)
		}
		var n notification
		if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &n); err != nil {
			t.Fatalf("notification %q: %v", aws.ToString(m.Body), err)
		}
		ns = append(ns, n)
	}
	return ns
}

// command runs the report command on the target's log groups for its day.
func (tg target) command(t *testing.T, format string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := []string{"--source", "aws", "--env", tg.env, "--endpoint", moto.URL, "--region", "us-east-1",
		"--date", tg.day, "--format", format}
	if code := run(context.Background(), args, &stdout, &stderr, env(nil), time.Now()); code != 0 {
		t.Fatalf("command: exit %d; stderr %s", code, stderr.String())
	}
	return stdout.String()
}

// TestLambdaOnMoto wires the handler from the Lambda's environment against
// moto, invokes it as the runtime would, and compares what it stored and
// published with the command's report of the same day.
func TestLambdaOnMoto(t *testing.T) {
	if moto == nil {
		t.Skip("moto_server not installed")
	}
	tg := newTarget(t, "lambdatest")
	for k, v := range awsEnv() {
		t.Setenv(k, v)
	}
	t.Setenv("ENV_NAME", tg.env)
	t.Setenv("REPORT_BUCKET", tg.bucket)
	t.Setenv("REPORT_TOPIC_ARN", tg.topicARN)
	t.Setenv("REPORT_LOG_GROUPS", "")
	t.Setenv("_X_AMZN_TRACE_ID", "Root=1-6789abcd-0123456789abcdef01234567;Sampled=1")
	var logs bytes.Buffer
	h, err := newHandler(context.Background(), logging.New(&logs, "report", slog.LevelDebug), recorder)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, wantMD := tg.command(t, "json"), tg.command(t, "md")

	tests := []struct {
		name    string
		limit   int
		wantCut bool
	}{
		{"the whole markdown", 0, false},
		{"markdown cut to the message limit", 1500, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			h.MaxMessageBytes = tt.limit
			ctx := lambdacontext.NewContext(context.Background(),
				&lambdacontext.LambdaContext{AwsRequestID: fmt.Sprintf("request-%d", i)})

			res, err := h.Handle(ctx, schedule.Event{Date: tg.day})
			if err != nil {
				t.Fatalf("handle: %v\nlogs: %s", err, logs.String())
			}

			key := "reports/" + tg.env + "/" + tg.day
			if res.JSONKey != key+".json" || res.HTMLKey != key+".html" || res.Truncated != tt.wantCut {
				t.Errorf("result: got %+v; want keys %s.json, .html, truncated %v", res, key, tt.wantCut)
			}
			if got := string(tg.object(t, res.JSONKey)); got != wantJSON {
				t.Errorf("stored json:\n%s\nwant the command's:\n%s", got, wantJSON)
			}
			var r report.Report
			json.Unmarshal([]byte(wantJSON), &r)
			if want := tg.corpus.Want(report.PeriodEnding(time.Now().UTC().AddDate(0, 0, -1), 1)); r.Figures != want {
				t.Errorf("figures: got %+v; want %+v", r.Figures, want)
			}
			if page := tg.object(t, res.HTMLKey); !bytes.HasPrefix(page, []byte("<!DOCTYPE html>")) {
				t.Errorf("stored html: got %.40q; want a page", page)
			}

			ns := tg.published(t)
			if len(ns) != 1 {
				t.Fatalf("published: got %d messages; want 1", len(ns))
			}
			n := ns[0]
			if want := "AI Shell daily report " + tg.env + " " + tg.day; n.Subject != want {
				t.Errorf("subject: got %q; want %q", n.Subject, want)
			}
			switch {
			case !tt.wantCut && !strings.HasPrefix(n.Message, wantMD):
				t.Errorf("message:\n%s\nwant the command's markdown first:\n%s", n.Message, wantMD)
			case tt.wantCut && (len(n.Message) > tt.limit || !strings.HasPrefix(wantMD, n.Message[:200]) ||
				!strings.Contains(n.Message, "cut here")):
				t.Errorf("message of %d bytes:\n%s\nwant the markdown's start, cut to %d bytes with a note",
					len(n.Message), n.Message, tt.limit)
			}
			if !strings.Contains(n.Message, "s3://"+tg.bucket+"/"+res.JSONKey) {
				t.Errorf("message: want it to name s3://%s/%s", tg.bucket, res.JSONKey)
			}
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil || m[logging.KeyRequestID] != fmt.Sprintf("request-%d", i) ||
					m[logging.KeyTraceID] != "1-6789abcd-0123456789abcdef01234567" {
					t.Errorf("log line %q: want JSON with the request and trace ids", l)
				}
			}
		})
	}
}

// The binary, built as `make lambdas` builds it but for this machine.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "aishell-report-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "bootstrap")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", binPath, ".")
		cmd.Dir = filepath.Dir(file)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// childEnv is a minimal environment for the binary: nothing of this
// process's leaks in, AWS_LAMBDA_RUNTIME_API least of all.
func childEnv(t *testing.T, vars map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

func TestBinaryStartsAsCommand(t *testing.T) {
	bin := binary(t)
	dataDir := t.TempDir()
	c := corpus.Generate(corpus.Options{First: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Days: 4, Seed: 3,
		BadDay: 3})
	if err := c.WriteFiles(filepath.Join(dataDir, "logs")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		check    func(t *testing.T, stdout, stderr string)
	}{
		{"a day from the local files", []string{"--date", "2026-12-04", "--format", "json"}, 0,
			func(t *testing.T, stdout, _ string) {
				var got report.Report
				if err := json.Unmarshal([]byte(stdout), &got); err != nil {
					t.Fatalf("stdout %q: %v", stdout, err)
				}
				if want := c.Want(report.PeriodEnding(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), 1)); got.Figures != want {
					t.Errorf("figures: got %+v; want %+v", got.Figures, want)
				}
			}},
		{"help", []string{"-h"}, 0, func(t *testing.T, _, stderr string) {
			if !strings.Contains(stderr, "-date") {
				t.Errorf("stderr: got %q; want the flags", stderr)
			}
		}},
		{"bad flags", []string{"--format", "pdf"}, 2, func(t *testing.T, _, stderr string) {
			if !strings.Contains(stderr, "--format") {
				t.Errorf("stderr: got %q; want it to name --format", stderr)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = childEnv(t, map[string]string{"DATA_DIR": dataDir})
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tt.wantCode {
				t.Fatalf("exit: got %d (%v); want %d; stderr %s", code, err, tt.wantCode, stderr.String())
			}
			tt.check(t, stdout.String(), stderr.String())
		})
	}
}

// invocation is one event the fake runtime API hands out, and what the
// function answered.
type invocation struct {
	id      string
	payload string
}

type answer struct {
	id   string
	ok   bool // /response rather than /error
	body []byte
}

// fakeRuntime is the Lambda service's side of the runtime API, on
// loopback: it hands out queued invocations on /next and reports each
// answer. Once the queue is empty, /next waits until the function is gone.
type fakeRuntime struct {
	next    chan invocation
	answers chan answer
}

const runtimePrefix = "/2018-06-01/runtime/invocation/"

// traceRootOf is the X-Ray trace root the fake runtime gives invocation id.
func traceRootOf(id string) string {
	h := fnv.New64a()
	h.Write([]byte(id))
	return fmt.Sprintf("1-6789abcd-%024x", h.Sum64())
}

func (f *fakeRuntime) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, runtimePrefix)
	switch {
	case ok && r.Method == http.MethodGet && rest == "next":
		select {
		case inv := <-f.next:
			h := w.Header()
			h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
			h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(2*time.Minute).UnixMilli(), 10))
			h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:report")
			h.Set("Lambda-Runtime-Trace-Id", "Root="+traceRootOf(inv.id)+";Parent=53995c3f42cd8ad8;Sampled=1")
			io.WriteString(w, inv.payload)
		case <-r.Context().Done():
		}
	case ok && r.Method == http.MethodPost && (strings.HasSuffix(rest, "/response") || strings.HasSuffix(rest, "/error")):
		id, kind, _ := strings.Cut(rest, "/")
		body, _ := io.ReadAll(r.Body)
		f.answers <- answer{id: id, ok: kind == "response", body: body}
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// TestBinaryRunsAsLambda starts the binary as Lambda starts it, with
// AWS_LAMBDA_RUNTIME_API naming a fake runtime API on loopback and AWS
// (moto) reached through AWS_ENDPOINT_URL, and hands it a schedule's event,
// an operator's and a bad one, in that order.
func TestBinaryRunsAsLambda(t *testing.T) {
	if moto == nil {
		t.Skip("moto_server not installed")
	}
	bin := binary(t)
	tg := newTarget(t, "bintest")

	scheduled := fmt.Sprintf(`{"version":"0","id":"c0ffee","detail-type":"Scheduled Event","source":"aws.events",`+
		`"time":%q,"region":"us-east-1","resources":[],"detail":{}}`, time.Now().UTC().Format(time.RFC3339))
	invocations := []struct {
		inv     invocation
		wantOK  bool
		wantIn  string // in the answer
		wantLog string // the event of the invocation's last line
	}{
		{invocation{"req-schedule", scheduled}, true, `"jsonKey":"reports/bintest/` + tg.day + `.json"`,
			schedule.EventPublished},
		{invocation{"req-by-hand", `{"date":"` + tg.day + `","range":"2d"}`}, true,
			`"jsonKey":"reports/bintest/` + tg.day + `-2d.json"`, schedule.EventPublished},
		{invocation{"req-bad", `{"date":"someday"}`}, false, `read event: date: want YYYY-MM-DD`,
			schedule.EventFailed},
	}
	rt := &fakeRuntime{next: make(chan invocation, len(invocations)), answers: make(chan answer, len(invocations))}
	for _, c := range invocations {
		rt.next <- c.inv
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)

	vars := awsEnv()
	vars["AWS_LAMBDA_RUNTIME_API"] = srv.Listener.Addr().String()
	vars["ENV_NAME"] = tg.env
	vars["REPORT_BUCKET"] = tg.bucket
	vars["REPORT_TOPIC_ARN"] = tg.topicARN
	vars["LOG_LEVEL"] = "info"
	cmd := exec.Command(bin)
	cmd.Env = childEnv(t, vars)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	// Registered after srv.Close, so run before it: the function's last
	// /next holds a request open until the process is gone.
	stop := func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(stop)

	limit := time.NewTimer(2 * time.Minute)
	defer limit.Stop()
	for _, c := range invocations {
		select {
		case a := <-rt.answers:
			if a.id != c.inv.id || a.ok != c.wantOK || !strings.Contains(string(a.body), c.wantIn) {
				t.Errorf("answer: got %s ok=%v %s; want %s ok=%v with %q", a.id, a.ok, a.body, c.inv.id, c.wantOK, c.wantIn)
			}
		case <-done:
			t.Fatalf("the function exited (%v) before answering %s; stdout %s; stderr %s",
				waitErr, c.inv.id, stdout.String(), stderr.String())
		case <-limit.C:
			t.Fatalf("no answer to %s within 2 minutes", c.inv.id)
		}
	}
	stop()

	if stderr.Len() > 0 {
		t.Errorf("stderr: got %q; want nothing (logs go to stdout)", stderr.String())
	}
	last := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("log line %q is not JSON", l)
			continue
		}
		id, _ := m[logging.KeyRequestID].(string)
		if id == "" || m[logging.KeyTraceID] != traceRootOf(id) || m["service"] != "report" {
			t.Errorf("log line %s: want the requestId, its traceId and service report", l)
		}
		last[id], _ = m["event"].(string)
	}
	for _, c := range invocations {
		if last[c.inv.id] != c.wantLog {
			t.Errorf("last log line of %s: got %q; want %s", c.inv.id, last[c.inv.id], c.wantLog)
		}
	}
	subjects := map[string]bool{}
	for _, n := range tg.published(t) {
		subjects[n.Subject] = true
	}
	if want := "AI Shell daily report bintest " + tg.day; !subjects[want] || len(subjects) != 2 {
		t.Errorf("subjects published: got %v; want %q and the 2-day report's", subjects, want)
	}
}
