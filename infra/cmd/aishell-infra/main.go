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

// nodeEndOfLife silences jsii's banner about Node.js 20 being past its end
// of life in the app's own Node.js process, also when the app is started
// with `go run`; the CDK CLI's banner needs the variable in the shell
// (the Makefile exports it).
const nodeEndOfLife = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"

func main() {
	if os.Getenv(nodeEndOfLife) == "" {
		// Before the first jsii call, which starts the Node.js process.
		os.Setenv(nodeEndOfLife, "20")
	}
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
