// Package awsclient builds the AWS configuration every AWS adapter uses:
// the default credential chain and region, the endpoint from
// AWS_ENDPOINT_URL when set (moto in tests), X-Ray instrumentation through
// the tracing seam, and an optional recorder of the operations called.
package awsclient

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/tracing"
)

// Load returns the configuration for a component. rec may be nil.
func Load(ctx context.Context, component string, rec *awsops.Recorder) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	Prepare(&cfg, component, rec)
	return cfg, nil
}

// Prepare adds tracing and recording to a configuration built elsewhere
// (tests build theirs for moto).
func Prepare(cfg *aws.Config, component string, rec *awsops.Recorder) {
	tracing.InstrumentAWS(cfg)
	if rec != nil {
		cfg.APIOptions = append(cfg.APIOptions, rec.APIOption(component))
	}
}
