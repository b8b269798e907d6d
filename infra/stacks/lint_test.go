//go:build !race

package stacks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTemplatesPassCfnLint runs cfn-lint on every synthesized template.
// Errors fail; warnings are reported. The only warning CDK's output gives
// is W3005 (a DependsOn that a reference already implies), which CDK adds
// on purpose and infra/README.md names.
func TestTemplatesPassCfnLint(t *testing.T) {
	lint, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Fatal("cfn-lint is not on the PATH (pip install cfn-lint); .ci/run installs what the tests need")
	}
	for _, variant := range []string{variantStage, variantProd, variantPerUser} {
		t.Run(variant, func(t *testing.T) {
			s := synth(t, variant)
			templates, _ := filepath.Glob(filepath.Join(s.outdir, "*.template.json"))
			if len(templates) != len(s.env.Stacks()) {
				t.Fatalf("templates in %s: got %d; want %d", s.outdir, len(templates), len(s.env.Stacks()))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			args := append([]string{"--format", "json", "--non-zero-exit-code", "none"}, templates...)
			out, err := exec.CommandContext(ctx, lint, args...).Output()
			if err != nil {
				t.Fatalf("cfn-lint: %v", err)
			}
			var findings []struct {
				Rule     struct{ Id string }
				Level    string
				Message  string
				Filename string
			}
			if err := json.Unmarshal(out, &findings); err != nil {
				t.Fatalf("cfn-lint output: %v: %s", err, out)
			}
			for _, f := range findings {
				msg := filepath.Base(f.Filename) + ": " + f.Rule.Id + " " + f.Message
				switch {
				case f.Level == "Error":
					t.Errorf("%s", msg)
				case f.Rule.Id != "W3005":
					t.Errorf("warning not named in infra/README.md: %s", msg)
				}
			}
		})
	}
}

// TestCLISynthWorksOffline runs `cdk synth -c env=stage` the way an
// operator does, with no AWS credentials or region: it must succeed, with
// no Node.js end-of-life banner, no notices and no telemetry.
func TestCLISynthWorksOffline(t *testing.T) {
	root := repoRoot()
	cdk := filepath.Join(root, "node_modules", ".bin", "cdk")
	if _, err := os.Stat(cdk); err != nil {
		t.Fatalf("%s is missing: run `npm ci` (make web) first", cdk)
	}
	code, err := lambdaCode()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cdk, "synth", "-c", "env=stage", "-c", "lambdaCodeDir="+code,
		"-o", out, "--quiet")
	cmd.Dir = root
	// No credentials, no region, no profile: nothing to reach AWS with.
	// The CLI itself prints the Node.js banner, so the variable that
	// silences it is the Makefile's; notices and telemetry are off through
	// cdk.json alone.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "CDK_DISABLE_CLI_TELEMETRY=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20")
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		t.Fatalf("cdk synth: %v\n%s", err, output.String())
	}
	text := output.String()
	for _, unwanted := range []string{"end-of-life", "End of Life", "NOTICES", "telemetry"} {
		if strings.Contains(text, unwanted) {
			t.Errorf("cdk synth printed %q:\n%s", unwanted, text)
		}
	}
	templates, _ := filepath.Glob(filepath.Join(out, "*.template.json"))
	if len(templates) != 6 {
		t.Errorf("templates: got %d; want 6 (%s)", len(templates), text)
	}
}
