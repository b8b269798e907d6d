package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/dynamostore"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/secrets"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
)

// rieModule is the Lambda Runtime Interface Emulator, built from source.
const rieModule = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@" +
	"v0.0.0-20261030222936-bef5c4ba774d"

// TestLambdaUnderRIE builds the session Lambda as it is deployed (static,
// lambda.norpc, stripped; for this machine's architecture), runs it under
// the Runtime Interface Emulator on loopback, wired to moto through
// AWS_ENDPOINT_URL, and sends it API Gateway HTTP API events. It logs the
// binary's size and the cold init time.
func TestLambdaUnderRIE(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Lambda and the emulator")
	}
	moto, err := awstest.Start()
	if errors.Is(err, awstest.ErrNoMoto) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moto.Close() })
	ctx := context.Background()
	dir := t.TempDir()

	// The world the Lambda finds: tables, the keys' secret, a relay whose
	// control API answers here, and one warm task in its pool.
	cfg := moto.Config()
	tables := dynamostore.Tables{Sessions: "sessions", WarmTasks: "warm-tasks", Users: "users", Relays: "relays"}
	if err := dynamostore.CreateTables(ctx, dynamodb.NewFromConfig(cfg), tables); err != nil {
		t.Fatal(err)
	}
	value, err := secrets.NewSecretValue()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("aishell-keys"), SecretString: aws.String(value)}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var initUsers []relayclient.InitUserBody
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == relayclient.PathInitUser {
			var b relayclient.InitUserBody
			json.NewDecoder(r.Body).Decode(&b)
			mu.Lock()
			initUsers = append(initUsers, b)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(control.Close)
	store := dynamostore.New(dynamodb.NewFromConfig(cfg), tables)
	now := time.Now()
	if err := store.PutRelay(ctx, session.Relay{ID: "relay-1", ClientURL: "ws://127.0.0.1:1/ws",
		TaskURL: "ws://127.0.0.1:1", ControlURL: control.URL, HeartbeatAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutWarmTask(ctx, session.WarmTask{ID: "t_warm1", RelayID: "relay-1",
		Handle: "arn:aws:ecs:us-east-1:123456789012:task/c/warm1", State: session.WarmAvailable,
		StartedAt: now, ReadyAt: now}); err != nil {
		t.Fatal(err)
	}

	bootstrap := filepath.Join(dir, "bootstrap")
	build(t, []string{"GOOS=linux", "GOARCH=" + runtime.GOARCH, "CGO_ENABLED=0"},
		"build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w", "-o", bootstrap, ".")
	build(t, []string{"GOBIN=" + dir, "GOFLAGS="}, "install", rieModule)
	st, err := os.Stat(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("session Lambda binary (linux/%s, -s -w): %.1f MB", runtime.GOARCH, float64(st.Size())/(1<<20))

	rie := startRIE(t, filepath.Join(dir, "aws-lambda-rie"), bootstrap, []string{
		"AWS_ENDPOINT_URL=" + moto.URL,
		"AWS_REGION=" + awstest.Region,
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		// Static credentials and no instance metadata: nothing leaves
		// loopback.
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_LAMBDA_FUNCTION_NAME=session",
		"AWS_LAMBDA_FUNCTION_TIMEOUT=30",
		"SESSIONS_TABLE=" + tables.Sessions, "WARM_TASKS_TABLE=" + tables.WarmTasks,
		"USERS_TABLE=" + tables.Users, "RELAYS_TABLE=" + tables.Relays,
		"KEYS_SECRET_ID=aishell-keys",
		"ECS_CLUSTER=aishell", "TASK_DEFINITION=aishell-agent", "TASK_CONTAINER=agent",
		"TASK_SUBNETS=subnet-1", "TASK_SECURITY_GROUPS=sg-1", "LAUNCH_TYPE=FARGATE",
		"ENV_NAME=test", "WORKSPACE_ROOT=/workspaces",
	})

	cases := []struct {
		name       string
		sub        string
		wantStatus int
		check      func(t *testing.T, body string)
	}{
		{"POST /sessions without a user is refused", "", http.StatusUnauthorized, func(t *testing.T, body string) {
			var e sessionapi.ErrorObject
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != sessionapi.CodeUnauthorized {
				t.Errorf("got body %s; want an error object with code %s", body, sessionapi.CodeUnauthorized)
			}
		}},
		{"POST /sessions creates a session on the warm task", "user-1", http.StatusCreated, func(t *testing.T, body string) {
			var s sessionapi.SessionObject
			if err := json.Unmarshal([]byte(body), &s); err != nil || s.SessionID == "" || s.Ticket == "" || !s.Warm {
				t.Errorf("got body %s; want a warm session with a ticket", body)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(initUsers) != 1 || initUsers[0].TaskID != "t_warm1" || initUsers[0].SessionID != s.SessionID {
				t.Errorf("got init_user calls %+v; want one for t_warm1 and session %s", initUsers, s.SessionID)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := events.APIGatewayV2HTTPRequest{RawPath: "/sessions", Body: "{}"}
			req.RequestContext.HTTP.Method = http.MethodPost
			req.RequestContext.RequestID = "req-" + strconv.Itoa(i)
			if c.sub != "" {
				req.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
					JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{
						Claims: map[string]string{"sub": c.sub}},
				}
			}
			start := time.Now()
			resp := rie.invoke(t, req)
			if i == 0 {
				t.Logf("first invocation (cold: init and request): %s; init reported by the emulator: %s",
					time.Since(start).Round(time.Millisecond), rie.initDuration(t))
			}
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("got status %d (%s); want %d", resp.StatusCode, resp.Body, c.wantStatus)
			}
			c.check(t, resp.Body)
		})
	}
}

// build runs the go command with extra environment.
func build(t *testing.T, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// emulator is a running Runtime Interface Emulator.
type emulator struct {
	url string
	mu  sync.Mutex // guards out
	out bytes.Buffer
}

// startRIE runs the emulator on two loopback ports of its own with the
// Lambda at bootstrap and only the given environment (and PATH).
func startRIE(t *testing.T, bin, bootstrap string, env []string) *emulator {
	t.Helper()
	api, rapid := freePort(t), freePort(t)
	cmd := exec.Command(bin,
		"--runtime-interface-emulator-address", "127.0.0.1:"+api,
		"--runtime-api-address", "127.0.0.1:"+rapid,
		bootstrap)
	cmd.Dir = filepath.Dir(bootstrap)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &emulator{url: "http://127.0.0.1:" + api}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(pipe)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			e.mu.Lock()
			e.out.WriteString(s.Text() + "\n")
			e.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		// The emulator and the Lambda it started, by process group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		<-done
		if t.Failed() || os.Getenv("RIE_OUTPUT") != "" {
			t.Logf("emulator output:\n%s", e.output())
		}
	})
	return e
}

func (e *emulator) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.out.String()
}

// invoke sends one event. The emulator opens its port just after it
// starts and says nothing when it does, so refused connections are tried
// again for a short while.
func (e *emulator) invoke(t *testing.T, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	t.Helper()
	body, _ := json.Marshal(req)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Post(e.url+"/2015-03-31/functions/function/invocations", "application/json",
			bytes.NewReader(body))
		if err != nil && errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("invoke: %v", err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(raw, &out); err != nil || out.StatusCode == 0 {
			t.Fatalf("invoke: answer %s is no API Gateway response", raw)
		}
		return out
	}
}

var initReport = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)

// initDuration is the emulator's report of the Lambda's init phase.
func (e *emulator) initDuration(t *testing.T) string {
	m := initReport.FindStringSubmatch(e.output())
	if m == nil {
		return "not reported"
	}
	ms, _ := strconv.ParseFloat(m[1], 64)
	return (time.Duration(ms * float64(time.Millisecond))).Round(time.Millisecond / 10).String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
