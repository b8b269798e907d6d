// Package awstest runs moto_server (moto 5 in server mode) on loopback for
// the integration tests of the AWS adapters, and works around the gaps of
// moto 5.2.1 that the product's code must not know about. Each work-around
// names the gap it covers.
package awstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Region is the region every test uses.
const Region = "us-east-1"

// Moto is a running moto_server.
type Moto struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	cmd *exec.Cmd
	out *tail
}

// ErrNoMoto says moto_server is not installed.
var ErrNoMoto = errors.New("moto_server not found in PATH (pip install 'moto[server]')")

var running = regexp.MustCompile(`Running on (http://127\.0\.0\.1:\d+)`)

// Start starts moto_server on a loopback port of the system's choosing and
// returns once it listens. Stop it with Close.
func Start() (*Moto, error) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		return nil, ErrNoMoto
	}
	cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", "0")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start moto: %w", err)
	}
	w.Close()

	t := &tail{}
	found := make(chan string, 1)
	go func() {
		defer r.Close()
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for s.Scan() {
			t.add(s.Text())
			if m := running.FindStringSubmatch(s.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
		if !sent {
			close(found)
		}
		// A line too long for the scanner ends the loop; keep draining, or
		// moto dies writing to a closed pipe.
		io.Copy(io.Discard, r)
	}()
	select {
	case url, ok := <-found:
		if ok {
			return &Moto{URL: url, cmd: cmd, out: t}, nil
		}
	case <-time.After(30 * time.Second):
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, fmt.Errorf("moto_server did not start; it said: %s", t.String())
}

// Close stops the server.
func (m *Moto) Close() error {
	m.cmd.Process.Kill()
	m.cmd.Wait()
	return nil
}

// Output returns the server's last lines of output, for failure messages.
func (m *Moto) Output() string { return m.out.String() }

// Reset clears every service's state.
func (m *Moto) Reset(ctx context.Context) error {
	return m.post(ctx, "/moto-api/reset", nil)
}

// ManualECSTasks stops moto from moving tasks one step towards STOPPED on
// every DescribeTasks (moto gap: tasks progress on each describe unless the
// state manager's transition is manual).
func (m *Moto) ManualECSTasks(ctx context.Context) error {
	return m.post(ctx, "/moto-api/state-manager/set-transition", map[string]any{
		"model_name": "ecs::task",
		"transition": map[string]any{"progression": "manual", "times": 1000000},
	})
}

// ExecuteStateMachines turns on moto's Step Functions engine (moto gap: off
// by default; it must be on before state machines are created) and answers
// Lambda tasks without Docker.
func (m *Moto) ExecuteStateMachines(ctx context.Context) error {
	return m.post(ctx, "/moto-api/config", map[string]any{
		"stepfunctions": map[string]any{"execute_state_machine": true},
		"lambda":        map[string]any{"use_docker": false},
	})
}

func (m *Moto) post(ctx context.Context, path string, body any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("moto %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("moto %s: %d %s", path, resp.StatusCode, b)
	}
	return nil
}

// Config returns an AWS configuration aimed at the server: fake static
// credentials, the test region, the server as every service's endpoint, and
// an HTTP client that mends moto's ECS answers.
func (m *Moto) Config() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(m.URL),
		HTTPClient: &http.Client{
			Transport: &dynamoSerial{next: ecsCPUFix{http.DefaultTransport}},
			Timeout:   30 * time.Second,
		},
	}
}

// ecsCPUFix turns the numeric "cpu", "memory" and "memoryReservation" of
// tasks and containers in ECS's task answers into the strings the Go SDK
// expects (moto gap: moto 5.2.1 answers RunTask, DescribeTasks and
// StopTask with them as numbers, and the SDK refuses to deserialize them).
// Other answers (task definitions) carry them as numbers rightly and pass
// unchanged.
type ecsCPUFix struct{ next http.RoundTripper }

var cpuNumber = regexp.MustCompile(`"(cpu|memory|memoryReservation)":\s*(-?\d+)`)

// taskAnswers are the ECS operations whose answers carry tasks.
var taskAnswers = map[string]bool{
	"AmazonEC2ContainerServiceV20141113.RunTask":       true,
	"AmazonEC2ContainerServiceV20141113.DescribeTasks": true,
	"AmazonEC2ContainerServiceV20141113.StopTask":      true,
}

func (f ecsCPUFix) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err != nil || !taskAnswers[req.Header.Get("X-Amz-Target")] {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body = cpuNumber.ReplaceAllFunc(body, func(m []byte) []byte {
		sub := cpuNumber.FindSubmatch(m)
		return []byte(`"` + string(sub[1]) + `":` + strconv.Quote(string(sub[2])))
	})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// dynamoSerial sends DynamoDB requests one at a time (moto gap: moto 5.2.1
// serves requests on several threads and checks a conditional UpdateItem's
// condition and applies it without a lock, so two racing conditional
// writes can both win; real DynamoDB applies each item write atomically).
// Callers still interleave between their own calls, so claim races are
// still exercised.
type dynamoSerial struct {
	mu   sync.Mutex
	next http.RoundTripper
}

func (d *dynamoSerial) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.Header.Get("X-Amz-Target"), "DynamoDB_") {
		return d.next.RoundTrip(req)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	resp, err := d.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	// Read the answer while holding the lock: the write is done by then.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// tail keeps the last lines of a process's output.
type tail struct {
	mu    sync.Mutex // guards lines
	lines []string
}

func (t *tail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
