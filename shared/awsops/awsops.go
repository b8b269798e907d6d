// Package awsops records which AWS operations each component of the
// product calls, as IAM actions ("ecs:RunTask"). The integration tests run
// the AWS adapters with a recorder and check the calls against
// operations.json, the list the infrastructure's IAM test proves allowed by
// each role's synthesized policy (R11); so a new call without its
// permission fails a test.
package awsops

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Components whose roles the infrastructure defines.
const (
	SessionLambda = "session-lambda"
	RestartLambda = "restart-lambda"
	RefillLambda  = "refill-lambda"
	ReportLambda  = "report-lambda"
	Relay         = "relay"
)

//go:embed operations.json
var listed []byte

// Listed returns the committed list: component to IAM actions.
func Listed() (map[string][]string, error) {
	var m map[string][]string
	if err := json.Unmarshal(listed, &m); err != nil {
		return nil, fmt.Errorf("read operations.json: %w", err)
	}
	return m, nil
}

// iamPrefix maps the SDK's service ids to IAM action prefixes.
var iamPrefix = map[string]string{
	"ECS":             "ecs",
	"DynamoDB":        "dynamodb",
	"SFN":             "states",
	"Secrets Manager": "secretsmanager",
	"SSM":             "ssm",
	"CloudWatch Logs": "logs",
	"EFS":             "elasticfilesystem",
	"SNS":             "sns",
	"S3":              "s3",
	"IAM":             "iam",
}

// Action returns the IAM action of an SDK service id and operation.
func Action(serviceID, operation string) string {
	p, ok := iamPrefix[serviceID]
	if !ok {
		p = strings.ToLower(strings.ReplaceAll(serviceID, " ", ""))
	}
	return p + ":" + operation
}

// Recorder collects the actions called per component.
type Recorder struct {
	mu  sync.Mutex // guards ops
	ops map[string]map[string]bool
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{ops: map[string]map[string]bool{}}
}

// Record notes that component called action.
func (r *Recorder) Record(component, action string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ops[component] == nil {
		r.ops[component] = map[string]bool{}
	}
	r.ops[component][action] = true
}

// Ops returns the recorded actions, sorted, per component.
func (r *Recorder) Ops() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for c, set := range r.ops {
		for a := range set {
			out[c] = append(out[c], a)
		}
		sort.Strings(out[c])
	}
	return out
}

// APIOption returns an SDK API option (for aws.Config.APIOptions) that
// records every operation the client calls for component.
func (r *Recorder) APIOption(component string) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("awsops.record",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (
				middleware.InitializeOutput, middleware.Metadata, error) {
				r.Record(component, Action(awsmiddleware.GetServiceID(ctx), awsmiddleware.GetOperationName(ctx)))
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	}
}

// Missing returns the recorded actions that operations.json does not list,
// as "component: action" lines.
func (r *Recorder) Missing() ([]string, error) {
	want, err := Listed()
	if err != nil {
		return nil, err
	}
	var out []string
	for c, acts := range r.Ops() {
		for _, a := range acts {
			if !slices.Contains(want[c], a) {
				out = append(out, c+": "+a)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Update merges the recorded actions into the operations.json at path (the
// source file, for AWSOPS_UPDATE=1 runs).
func (r *Recorder) Update(path string) error {
	cur, err := Listed()
	if err != nil {
		return err
	}
	for c, acts := range r.Ops() {
		for _, a := range acts {
			if !slices.Contains(cur[c], a) {
				cur[c] = append(cur[c], a)
			}
		}
		sort.Strings(cur[c])
	}
	b, err := json.MarshalIndent(cur, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
