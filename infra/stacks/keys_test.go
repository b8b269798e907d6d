//go:build !race

package stacks_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aishell/aishell/shared/secrets"
)

// keysHarness runs the keys initializer's handler (index.js, as deployed)
// under Node.js with the Secrets Manager client replaced by a fake that
// holds one value, and CloudFormation's response URL by a local server.
// It prints what the handler did as JSON.
const keysHarness = `
const http = require("node:http");
const Module = require("node:module");
// The handler's own log lines go to standard error, apart from the result.
console.log = (...args) => process.stderr.write(args.join(" ") + "\n");
const state = { value: process.env.START_VALUE, puts: 0, failGet: process.env.FAIL_GET === "1" };
class GetSecretValueCommand { constructor(input) { this.name = "get"; this.input = input; } }
class PutSecretValueCommand { constructor(input) { this.name = "put"; this.input = input; } }
class SecretsManagerClient {
  async send(cmd) {
    if (cmd.name === "get") {
      if (state.failGet) { const e = new Error("denied"); e.name = "AccessDeniedException"; throw e; }
      return { SecretString: state.value };
    }
    state.value = cmd.input.SecretString;
    state.puts++;
    return {};
  }
}
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === "@aws-sdk/client-secrets-manager") {
    return { SecretsManagerClient, GetSecretValueCommand, PutSecretValueCommand };
  }
  return load.call(this, request, ...rest);
};
const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    res.end();
    server.close();
    process.stdout.write(JSON.stringify({ response: JSON.parse(body), value: state.value, puts: state.puts }));
  });
});
server.listen(0, "127.0.0.1", async () => {
  const { handler } = require(process.argv[2]);
  await handler({
    RequestType: process.env.REQUEST_TYPE, ResponseURL: "http://127.0.0.1:" + server.address().port + "/cfn?x=1",
    StackId: "stack", RequestId: "req", LogicalResourceId: "KeysInitialization",
    ResourceProperties: { SecretId: "arn:aws:secretsmanager:eu-west-1:111111111111:secret:aishell/stage/keys" },
  });
});
`

func TestKeysInitializerWritesKeysSharedSecretsReads(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not on the PATH")
	}
	var code string
	for _, fn := range synth(t, variantStage).resources("AWS::Lambda::Function") {
		if zip, ok := props(fn)["Code"].(map[string]interface{})["ZipFile"].(string); ok {
			code = zip
		}
	}
	if code == "" {
		t.Fatal("no inline keys initializer in the data stack")
	}
	dir := t.TempDir()
	index, harness := filepath.Join(dir, "index.js"), filepath.Join(dir, "harness.js")
	if err := os.WriteFile(index, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(harness, []byte(keysHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh, err := secrets.NewSecretValue()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, request, start string
		failGet              bool
		wantStatus           string
		wantPuts             int
	}{
		{"create replaces the placeholder", "Create", "Xq3placeholderFromCloudFormation", false, "SUCCESS", 1},
		{"update keeps keys in place", "Update", fresh, false, "SUCCESS", 0},
		{"delete leaves the secret alone", "Delete", "placeholder", false, "SUCCESS", 0},
		{"a failed read fails the resource", "Create", "placeholder", true, "FAILED", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, harness, index)
			cmd.Env = append(os.Environ(), "REQUEST_TYPE="+tc.request, "START_VALUE="+tc.start)
			if tc.failGet {
				cmd.Env = append(cmd.Env, "FAIL_GET=1")
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node harness: %v: %s%s", err, out, stderr.String())
			}
			if tc.failGet && !strings.Contains(stderr.String(), `"event":"keys_initializer_failed"`) {
				t.Errorf("failure not logged: %q", stderr.String())
			}
			var got struct {
				Response struct {
					Status, Reason, PhysicalResourceId string
				}
				Value string
				Puts  int
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("harness output %q: %v", out, err)
			}
			if got.Response.Status != tc.wantStatus || got.Puts != tc.wantPuts {
				t.Fatalf("status %s (%s), puts %d; want %s, %d", got.Response.Status, got.Response.Reason,
					got.Puts, tc.wantStatus, tc.wantPuts)
			}
			if got.Response.PhysicalResourceId == "" {
				t.Errorf("no PhysicalResourceId in the response")
			}
			if tc.wantStatus == "SUCCESS" && tc.request != "Delete" {
				// shared/secrets must read what the initializer wrote.
				if _, err := secrets.Rotate(got.Value); err != nil {
					t.Errorf("secret value after %s is not what shared/secrets reads: %v", tc.request, err)
				}
			}
			if tc.request == "Update" && got.Value != tc.start {
				t.Errorf("update changed valid keys")
			}
		})
	}
}
