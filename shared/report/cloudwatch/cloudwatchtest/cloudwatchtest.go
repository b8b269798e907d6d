// Package cloudwatchtest runs moto_server on loopback for tests of the
// report against CloudWatch Logs, and loads log corpora into it through the
// AWS SDK.
package cloudwatchtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"

	"github.com/aishell/aishell/shared/report/cloudwatch"
	"github.com/aishell/aishell/shared/report/corpus"
)

// Moto is a running moto_server.
type Moto struct {
	URL string // http://127.0.0.1:PORT
	cmd *exec.Cmd
}

var running = regexp.MustCompile(`Running on (http://127\.0\.0\.1:\d+)`)

// ErrNoMoto says moto_server is not installed.
var ErrNoMoto = errors.New("moto_server not found in PATH")

// StartMoto starts moto_server on 127.0.0.1 on a port of the system's
// choosing and returns once it says it listens.
func StartMoto() (*Moto, error) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		return nil, ErrNoMoto
	}
	cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", "0")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start moto: %w", err)
	}
	w.Close()

	// Read its output until it names its address, then keep draining it
	// so that it never blocks on a full pipe.
	found := make(chan string, 1)
	go func() {
		defer r.Close()
		s := bufio.NewScanner(r)
		for s.Scan() {
			if m := running.FindStringSubmatch(s.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		close(found)
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case url, ok := <-found:
		if ok {
			return &Moto{URL: url, cmd: cmd}, nil
		}
	case <-time.After(30 * time.Second):
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, errors.New("start moto: it never said where it listens")
}

// Stop ends the moto_server process.
func (m *Moto) Stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
}

// Client returns a CloudWatch Logs client on moto, in us-east-1, with a
// short back-off so that retried calls take little time.
func (m *Moto) Client(ctx context.Context) (*cloudwatchlogs.Client, error) {
	return cloudwatch.NewClient(ctx, cloudwatch.ClientOptions{
		Region:      "us-east-1",
		Endpoint:    m.URL,
		HTTPClient:  &http.Client{Timeout: 30 * time.Second},
		MaxAttempts: 4,
		MaxBackoff:  20 * time.Millisecond,
	})
}

// PutCorpus creates the log groups of prefix (PREFIX/relay, PREFIX/lambdas)
// and puts the corpus's lines into them, one stream per service and day, in
// batches as PutLogEvents takes them. It returns the groups.
func PutCorpus(ctx context.Context, client *cloudwatchlogs.Client, prefix string,
	c *corpus.Corpus) ([]string, error) {
	groups := map[string]string{
		corpus.ServiceRelay:   prefix + "/relay",
		corpus.ServiceLambdas: prefix + "/lambdas",
	}
	for _, g := range groups {
		in := &cloudwatchlogs.CreateLogGroupInput{LogGroupName: aws.String(g)}
		if _, err := client.CreateLogGroup(ctx, in); err != nil {
			return nil, fmt.Errorf("create log group %s: %w", g, err)
		}
	}

	type key struct{ group, stream string }
	batches := map[key][]types.InputLogEvent{}
	for _, l := range c.Lines {
		k := key{groups[l.Service], l.Service + "/" + l.Time.Format(time.DateOnly)}
		batches[k] = append(batches[k], types.InputLogEvent{
			Message: aws.String(l.Text), Timestamp: aws.Int64(l.Time.UnixMilli()),
		})
	}
	keys := make([]key, 0, len(batches))
	for k := range batches {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].stream < keys[j].stream })

	for _, k := range keys {
		if _, err := client.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{
			LogGroupName: aws.String(k.group), LogStreamName: aws.String(k.stream),
		}); err != nil {
			return nil, fmt.Errorf("create log stream %s: %w", k.stream, err)
		}
		evs := batches[k]
		for len(evs) > 0 {
			n := min(len(evs), 1000)
			out, err := client.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{
				LogGroupName: aws.String(k.group), LogStreamName: aws.String(k.stream), LogEvents: evs[:n],
			})
			if err != nil {
				return nil, fmt.Errorf("put log events: %w", err)
			}
			if out.RejectedLogEventsInfo != nil {
				return nil, fmt.Errorf("put log events: some rejected: %+v", *out.RejectedLogEventsInfo)
			}
			evs = evs[n:]
		}
	}
	return []string{groups[corpus.ServiceRelay], groups[corpus.ServiceLambdas]}, nil
}
