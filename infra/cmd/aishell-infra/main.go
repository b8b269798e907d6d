// Command aishell-infra is the CDK app of AI Shell (cdk.json runs it): it
// synthesizes the stacks of the environment named by `-c env=stage` or
// `-c env=prod`. See infra/README.md for the context values.
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/infra/stacks"
)

func main() {
	defer jsii.Close()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "aishell-infra:", err)
		os.Exit(1)
	}
}

func run() error {
	props := &awscdk.AppProps{}
	// The CLI gives the output folder in CDK_OUTDIR; an Outdir of ours
	// would override its -o.
	if os.Getenv("CDK_OUTDIR") == "" {
		props.Outdir = jsii.String("cdk.out")
	}
	app := awscdk.NewApp(props)
	opts, err := stacks.OptionsFromContext(app)
	if err != nil {
		return err
	}
	if _, err := stacks.Build(app, opts); err != nil {
		return err
	}
	app.Synth(nil)
	return nil
}
