//go:build !race

// The infra tests drive the CDK through jsii's Node.js process; the race
// detector has nothing to watch there and would double the CDK's compile,
// so `go test -race ./...` skips them and `make test-infra` runs them.

package stacks_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"

	"github.com/aishell/aishell/infra/stacks"
)

// A synthesized environment, made once per test binary and shared.
type synthesized struct {
	env       *stacks.Environment
	envName   string
	outdir    string
	templates map[string]assertions.Template    // by stack name (aishell-stage-data)
	raw       map[string]map[string]interface{} // the same, as JSON values
	err       error
}

// Variants of the synth the tests look at: each environment as `cdk
// deploy -c env=...` makes it, prod with TLS, and stage in per-user mode
// on an imported VPC (the context values a deploy would pass).
const (
	variantStage   = "stage"
	variantProd    = "prod-tls"
	variantPerUser = "stage-per-user-imported-vpc"
)

var variantContext = map[string]map[string]string{
	variantStage: {"env": "stage"},
	variantProd: {
		"env":            "prod",
		"certificateArn": "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000",
		"relayDomain":    "relay.example.com",
		"jwtIssuer":      "https://auth.example.com/",
		"jwtAudience":    "aishell-web",
	},
	variantPerUser: {
		"env":                  "stage",
		"useSharedAccessPoint": "false",
		"vpcId":                "vpc-0123456789abcdef0",
		"vpcAzs":               "eu-west-1a,eu-west-1b",
		"vpcPrivateSubnetIds":  "subnet-00000000000000001,subnet-00000000000000002",
		"vpcPublicSubnetIds":   "subnet-00000000000000003,subnet-00000000000000004",
	},
}

var (
	synthMu sync.Mutex
	synths  = map[string]*synthesized{}
	// scratch holds the synth folders and the stand-in Lambda code.
	scratch string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "aishell-infra-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the repository's root folder (where cdk.json is).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// lambdaCode makes stand-in bootstrap files: the infra tests check the
// stacks, not the Lambdas' code, and must not need `make lambdas`.
func lambdaCode() (string, error) {
	dir := filepath.Join(scratch, "lambdas")
	for _, name := range []string{stacks.SessionFunction, stacks.RestartFunction, stacks.RefillFunction,
		stacks.ReportFunction} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name, "bootstrap"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// cdkJSONContext returns the context of the repository's cdk.json (its
// feature flags), so that the tests synthesize what `cdk synth` does.
func cdkJSONContext() (map[string]interface{}, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "cdk.json"))
	if err != nil {
		return nil, err
	}
	var doc struct {
		Context map[string]interface{} `json:"context"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("read cdk.json: %w", err)
	}
	return doc.Context, nil
}

// synth returns the named variant, synthesizing it on first use.
func synth(t *testing.T, variant string) *synthesized {
	t.Helper()
	synthMu.Lock()
	defer synthMu.Unlock()
	s, ok := synths[variant]
	if !ok {
		s = doSynth(variant)
		synths[variant] = s
	}
	if s.err != nil {
		t.Fatalf("synth %s: %v", variant, s.err)
	}
	return s
}

func doSynth(variant string) (s *synthesized) {
	s = &synthesized{templates: map[string]assertions.Template{}, raw: map[string]map[string]interface{}{},
		envName: variantContext[variant]["env"]}
	defer func() {
		if r := recover(); r != nil {
			s.err = fmt.Errorf("panic: %v", r)
		}
	}()

	ctx, err := cdkJSONContext()
	if err != nil {
		s.err = err
		return s
	}
	code, err := lambdaCode()
	if err != nil {
		s.err = err
		return s
	}
	for k, v := range variantContext[variant] {
		ctx[k] = v
	}
	ctx["lambdaCodeDir"] = code
	ctx["sourceDir"] = repoRoot()
	s.outdir = filepath.Join(scratch, variant)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(s.outdir), Context: &ctx})
	opts, err := stacks.OptionsFromContext(app)
	if err != nil {
		s.err = err
		return s
	}
	if s.env, err = stacks.Build(app, opts); err != nil {
		s.err = err
		return s
	}
	app.Synth(nil)
	for _, st := range s.env.Stacks() {
		tpl := assertions.Template_FromStack(st, nil)
		s.templates[*st.StackName()] = tpl
		s.raw[*st.StackName()] = *tpl.ToJSON()
	}
	return s
}

// template returns one stack's template of a variant, by the stack's
// name without the environment prefix ("data", "control-plane").
func (s *synthesized) template(t *testing.T, short string) assertions.Template {
	t.Helper()
	name := "aishell-" + s.envName + "-" + short
	tpl, ok := s.templates[name]
	if !ok {
		t.Fatalf("no stack %s", name)
	}
	return tpl
}

// resources returns the resources of one type across all stacks of a
// variant, by stack name and logical id.
func (s *synthesized) resources(typ string) map[string]map[string]interface{} {
	out := map[string]map[string]interface{}{}
	for stack, tpl := range s.raw {
		res, _ := tpl["Resources"].(map[string]interface{})
		for id, r := range res {
			m, _ := r.(map[string]interface{})
			if m["Type"] == typ {
				out[stack+"/"+id] = m
			}
		}
	}
	return out
}

// props returns a resource's Properties.
func props(r map[string]interface{}) map[string]interface{} {
	p, _ := r["Properties"].(map[string]interface{})
	return p
}

// must runs an assertion, which panics on a mismatch, and reports the
// mismatch as a test error.
func must(t *testing.T, what string, assertion func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: %v", what, r)
		}
	}()
	assertion()
}

// obj and list shorten matcher literals.
type obj = map[string]interface{}

func list(v ...interface{}) *[]interface{} { return &v }
