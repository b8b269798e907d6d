package sfnflow

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"
)

func TestCauseReason(t *testing.T) {
	cases := []struct {
		name, step, cause, want string
	}{
		{"the step's own Lambda error gives its message",
			"start_task", `{"errorType":"start_task","errorMessage":"start_task: ClientException: no capacity"}`,
			"ClientException: no capacity"},
		{"register_connection_wait is WaitConnection's own",
			"wait_connection", `{"errorType":"register_connection_wait","errorMessage":"task t1 is no longer the session's task"}`,
			"task t1 is no longer the session's task"},
		{"another error type is named",
			"wait_running", `{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"too large"}`,
			"Function.ResponseSizeTooLarge: too large"},
		{"a plain cause stays as it is",
			"stop_old_task", "Rate Exceeded. (Service: AWSLambda; Status Code: 429)",
			"Rate Exceeded. (Service: AWSLambda; Status Code: 429)"},
		{"no cause says so", "start_task", "", "the step failed without a cause"},
	}
	for _, c := range cases {
		if got := causeReason(c.step, c.cause); got != c.want {
			t.Errorf("%s: causeReason(%q, %q) = %q; want %q", c.name, c.step, c.cause, got, c.want)
		}
	}
}

// historySFN answers GetExecutionHistory with fixed events.
type historySFN struct {
	SFN
	events []types.HistoryEvent
}

func (h historySFN) GetExecutionHistory(context.Context, *sfn.GetExecutionHistoryInput,
	...func(*sfn.Options)) (*sfn.GetExecutionHistoryOutput, error) {
	return &sfn.GetExecutionHistoryOutput{Events: h.events}, nil
}

func TestLastStepTakesTheNewestStateEntered(t *testing.T) {
	entered := func(id int64, name string) types.HistoryEvent {
		return types.HistoryEvent{Id: id, StateEnteredEventDetails: &types.StateEnteredEventDetails{Name: aws.String(name)}}
	}
	newestFirst := []types.HistoryEvent{
		{Id: 12}, entered(10, StateWaitConnection), entered(7, StateWaitRunning), entered(2, StateStopOldTask),
	}
	oldestFirst := []types.HistoryEvent{
		entered(2, StateStopOldTask), entered(7, StateWaitRunning), entered(10, StateWaitConnection), {Id: 12},
	}
	for name, events := range map[string][]types.HistoryEvent{"newest first": newestFirst, "oldest first": oldestFirst} {
		w := NewWorkflows(historySFN{events: events}, nil, "arn", nil)
		got, err := w.lastStep(context.Background(), "arn:x")
		if err != nil || got != StepWaitConnection {
			t.Errorf("%s: got %q, %v; want %s", name, got, err, StepWaitConnection)
		}
	}
}
