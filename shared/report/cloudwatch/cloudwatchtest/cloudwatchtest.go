// Package cloudwatchtest runs moto_server on loopback for tests of the
// report against CloudWatch Logs, and loads log corpora into it through the
// AWS SDK.
package cloudwatchtest

import (
	"context"
	"fmt"
	"github.com/aishell/aishell/shared/awstest"
	"net/http"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"

	"github.com/aishell/aishell/shared/report/cloudwatch"
	"github.com/aishell/aishell/shared/report/corpus"
)

// Moto is a running moto_server (shared/awstest's). URL is a copy that a
// test may point elsewhere (a proxy in front of moto).
type Moto struct {
	URL  string
	moto *awstest.Moto
}

// ErrNoMoto says moto_server is not installed.
var ErrNoMoto = awstest.ErrNoMoto

// StartMoto starts moto_server on 127.0.0.1 on a port of the system's
// choosing and returns once it says it listens.
func StartMoto() (*Moto, error) {
	m, err := awstest.Start()
	if err != nil {
		return nil, err
	}
	return &Moto{URL: m.URL, moto: m}, nil
}

// Stop ends the moto_server process.
func (m *Moto) Stop() { m.moto.Close() }

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
