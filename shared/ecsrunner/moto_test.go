package ecsrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
)

// The package's one moto_server, and the recorder of the AWS operations
// the runner calls. Tests record under the session Lambda, except those of
// the refill's own calls (ListTasks); the restart Lambda runs the runner as
// the session Lambda does, and operations.json lists the same actions for
// it.
var (
	moto     *awstest.Moto
	recorder = awsops.NewRecorder()
)

func TestMain(m *testing.M) {
	var err error
	moto, err = awstest.Start()
	if err != nil && !errors.Is(err, awstest.ErrNoMoto) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if moto != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = moto.ManualECSTasks(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			moto.Close()
			os.Exit(1)
		}
	}

	code := m.Run()

	if moto != nil {
		moto.Close()
	}
	if code == 0 {
		if err := recorder.Check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// fixture is one test's world in moto: its own cluster and fixed task
// definition, on a subnet and security group of moto's default VPC.
type fixture struct {
	cluster, family string
	subnet, group   string
	fileSystem      string
	// setupECS and setupEFS make the world; their calls are not the
	// runner's and are not recorded.
	setupECS *ecs.Client
	setupEFS *efs.Client
}

var fixtures atomic.Int64

// newFixture makes a cluster and a fixed task definition, mounting an EFS
// file system's access point at /workspaces in the agent container.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	if moto == nil {
		t.Skip(awstest.ErrNoMoto)
	}
	ctx := context.Background()
	cfg := moto.Config()
	cfg.HTTPClient = &wire{next: cfg.HTTPClient}
	f := &fixture{setupECS: ecs.NewFromConfig(cfg), setupEFS: efs.NewFromConfig(cfg)}
	n := fixtures.Add(1)
	f.cluster, f.family = fmt.Sprintf("cluster-%d", n), fmt.Sprintf("agent-%d", n)

	vpcs := ec2.NewFromConfig(cfg)
	subnets, err := vpcs.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{
		{Name: aws.String("default-for-az"), Values: []string{"true"}},
	}})
	if err != nil || len(subnets.Subnets) == 0 {
		t.Fatalf("find a default subnet: %v", err)
	}
	f.subnet = aws.ToString(subnets.Subnets[0].SubnetId)
	groups, err := vpcs.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{
			{Name: aws.String("group-name"), Values: []string{"default"}},
			{Name: aws.String("vpc-id"), Values: []string{aws.ToString(subnets.Subnets[0].VpcId)}},
		},
	})
	if err != nil || len(groups.SecurityGroups) == 0 {
		t.Fatalf("find the default security group: %v", err)
	}
	f.group = aws.ToString(groups.SecurityGroups[0].GroupId)

	fs, err := f.setupEFS.CreateFileSystem(ctx, &efs.CreateFileSystemInput{
		CreationToken: aws.String(f.family),
	})
	if err != nil {
		t.Fatalf("create file system: %v", err)
	}
	f.fileSystem = aws.ToString(fs.FileSystemId)

	if _, err := f.setupECS.CreateCluster(ctx, &ecs.CreateClusterInput{
		ClusterName: aws.String(f.cluster),
	}); err != nil {
		t.Fatalf("create cluster: %v", err)
	}
	if _, err := f.setupECS.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family:                  aws.String(f.family),
		NetworkMode:             ecstypes.NetworkModeAwsvpc,
		RequiresCompatibilities: []ecstypes.Compatibility{ecstypes.CompatibilityFargate},
		Cpu:                     aws.String("256"),
		Memory:                  aws.String("512"),
		TaskRoleArn:             aws.String("arn:aws:iam::123456789012:role/agent-task"),
		ExecutionRoleArn:        aws.String("arn:aws:iam::123456789012:role/agent-execution"),
		ContainerDefinitions: []ecstypes.ContainerDefinition{{
			Name:  aws.String("agent"),
			Image: aws.String("aishell/agent:test"),
			// Not memory: moto echoes a container's memory into its tasks as
			// a number, where the SDK reads a string, and awstest mends only
			// cpu (gap in awstest).
			MemoryReservation: aws.Int32(512),
			Environment: []ecstypes.KeyValuePair{
				{Name: aws.String(EnvWorkspaceRoot), Value: aws.String("/workspaces")},
			},
			MountPoints: []ecstypes.MountPoint{{
				SourceVolume: aws.String("workspaces"), ContainerPath: aws.String("/workspaces"),
			}},
		}},
		Volumes: []ecstypes.Volume{{
			Name: aws.String("workspaces"),
			EfsVolumeConfiguration: &ecstypes.EFSVolumeConfiguration{
				FileSystemId:      aws.String(f.fileSystem),
				TransitEncryption: ecstypes.EFSTransitEncryptionEnabled,
				AuthorizationConfig: &ecstypes.EFSAuthorizationConfig{
					AccessPointId: aws.String("fsap-shared"), Iam: ecstypes.EFSAuthorizationConfigIAMEnabled,
				},
			},
		}},
		Tags: []ecstypes.Tag{{Key: aws.String("team"), Value: aws.String("shell")}},
	}); err != nil {
		t.Fatalf("register the fixed task definition: %v", err)
	}
	return f
}

// config is a runner configuration for the fixture.
func (f *fixture) config() Config {
	return Config{
		Cluster:           f.cluster,
		TaskDefinition:    f.family,
		ContainerName:     "agent",
		Subnets:           []string{f.subnet},
		SecurityGroups:    []string{f.group},
		LaunchType:        "FARGATE",
		Env:               "stage",
		WorkspaceRoot:     "/workspaces",
		AgentCommand:      "claude --verbose",
		AgentMode:         "pty",
		SharedAccessPoint: true,
		FileSystemID:      f.fileSystem,
		// The rate limit is timed in fake time by its own tests.
		RunTaskRate: 1000,
	}
}

// runner returns a Runner on moto whose calls are recorded for the session
// Lambda and pass through wire, which counts them and may answer some
// itself.
func (f *fixture) runner(cfg Config, w *wire) *Runner {
	return f.runnerOf(awsops.SessionLambda, cfg, w)
}

// runnerOf is runner for another component.
func (f *fixture) runnerOf(component string, cfg Config, w *wire) *Runner {
	awsCfg := moto.Config()
	awsclient.Prepare(&awsCfg, component, recorder)
	w.next = awsCfg.HTTPClient
	awsCfg.HTTPClient = w
	r := New(ecs.NewFromConfig(awsCfg), efs.NewFromConfig(awsCfg), cfg)
	// Throttled calls are retried at once: the back-off itself is timed in
	// fake time by the tests of backoff.
	r.backoff.jitter = func(time.Duration) time.Duration { return 0 }
	return r
}

// task returns a task as moto describes it, with its tags.
func (f *fixture) task(t *testing.T, arn string) ecstypes.Task {
	t.Helper()
	out, err := f.setupECS.DescribeTasks(context.Background(), &ecs.DescribeTasksInput{
		Cluster: aws.String(f.cluster), Tasks: []string{arn},
		Include: []ecstypes.TaskField{ecstypes.TaskFieldTags},
	})
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("describe task %s: got %v and %d tasks; want one", arn, err, len(out.Tasks))
	}
	return out.Tasks[0]
}

// wire sits between the SDK and moto: it counts the requests of each
// operation, and answers the next requests of an operation with canned
// answers when told to, for what moto cannot be made to say (AWS's own
// answers in the shape AWS sends them).
type wire struct {
	next aws.HTTPClient

	mu     sync.Mutex // guards calls and canned
	calls  map[string]int
	canned map[string][]answer
}

// answer is a canned HTTP answer.
type answer struct {
	status int
	body   string
	// errorType is the X-Amzn-ErrorType header, by which REST services
	// (EFS) name an error.
	errorType string
}

// awsError is AWS's JSON answer for an error of the given code.
func awsError(status int, code, message string) answer {
	b, _ := json.Marshal(map[string]string{"__type": code, "message": message})
	return answer{status: status, body: string(b), errorType: code}
}

// answerWith queues answers for the next requests of operation op.
func (w *wire) answerWith(op string, answers ...answer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.canned == nil {
		w.canned = map[string][]answer{}
	}
	w.canned[op] = append(w.canned[op], answers...)
}

// count returns how many requests of op went out, answered or not.
func (w *wire) count(op string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[op]
}

// reset forgets the counts.
func (w *wire) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = nil
}

var plainHTTP = &http.Client{Timeout: 30 * time.Second}

var targetOp = regexp.MustCompile(`\.(\w+)$`)

func (w *wire) Do(req *http.Request) (*http.Response, error) {
	op := ""
	if m := targetOp.FindStringSubmatch(req.Header.Get("X-Amz-Target")); m != nil {
		op = m[1] // JSON protocols: ECS
	} else if parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/"); len(parts) > 1 {
		op = req.Method + " " + parts[1] // EFS's REST paths: /2015-02-01/access-points
	}

	w.mu.Lock()
	if w.calls == nil {
		w.calls = map[string]int{}
	}
	w.calls[op]++
	var canned *answer
	if q := w.canned[op]; len(q) > 0 {
		canned, w.canned[op] = &q[0], q[1:]
	}
	w.mu.Unlock()

	if canned == nil {
		if op == "RegisterTaskDefinition" || op == "DescribeTaskDefinition" {
			// Gap in awstest: its client quotes every number "cpu" of every
			// ECS answer, which mends tasks (whose cpu the SDK reads as a
			// string) but breaks task definitions (whose containers' cpu it
			// reads as a number); these go to moto unmended.
			return plainHTTP.Do(req)
		}
		return w.next.Do(req)
	}
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	header := http.Header{"Content-Type": {"application/x-amz-json-1.1"}}
	if canned.errorType != "" {
		header.Set("X-Amzn-Errortype", canned.errorType)
	}
	return &http.Response{
		StatusCode:    canned.status,
		Status:        http.StatusText(canned.status),
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader([]byte(canned.body))),
		ContentLength: int64(len(canned.body)),
		Request:       req,
	}, nil
}

// setTaskProgression makes moto move tasks one step towards STOPPED every
// times DescribeTasks calls (moto gap: moto starts tasks RUNNING and moves
// them only through its state manager), until the test ends.
func setTaskProgression(t *testing.T, times int) {
	t.Helper()
	post := func(times int) error {
		b, _ := json.Marshal(map[string]any{
			"model_name": "ecs::task",
			"transition": map[string]any{"progression": "manual", "times": times},
		})
		resp, err := http.Post(moto.URL+"/moto-api/state-manager/set-transition",
			"application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("set transition: %s", resp.Status)
		}
		return nil
	}
	if err := post(times); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := moto.ManualECSTasks(context.Background()); err != nil {
			t.Errorf("restore manual ECS tasks: %v", err)
		}
	})
}
