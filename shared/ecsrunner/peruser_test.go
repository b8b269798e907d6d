package ecsrunner

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"

	"github.com/aishell/aishell/shared/session"
)

// Operations of per-user mode as the wire counts them (EFS's by method
// and path).
const (
	opDescribeAccessPoints = "GET access-points"
	opCreateAccessPoint    = "POST access-points"
	opDescribeTaskDef      = "DescribeTaskDefinition"
	opRegisterTaskDef      = "RegisterTaskDefinition"
)

func TestPerUserModeCreatesOnceAndReuses(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.SharedAccessPoint = false
	cfg.TaskRoleArn = "arn:aws:iam::123456789012:role/user-task"
	ctx := context.Background()
	alice := session.TaskSpec{SessionID: "s_a", UserID: "alice", UID: 100001}
	spec := func(s session.TaskSpec, taskID string) session.TaskSpec {
		s.TaskID = taskID
		return s
	}

	w := &wire{}
	r := f.runner(cfg, w)
	first, err := r.Run(ctx, spec(alice, "t_1"))
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}
	second, err := r.Run(ctx, spec(alice, "t_2"))
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	// A Lambda started afresh finds what the first one made.
	wAgain := &wire{}
	again, err := f.runner(cfg, wAgain).Run(ctx, spec(alice, "t_3"))
	if err != nil {
		t.Fatalf("Run of a new runner: %v", err)
	}

	counts := []struct {
		name string
		w    *wire
		op   string
		want int
	}{
		{"first start", w, opDescribeAccessPoints, 1},
		{"first start", w, opCreateAccessPoint, 1},
		// The fixed task definition, then the user's family (none yet).
		{"first start", w, opDescribeTaskDef, 2},
		{"first start", w, opRegisterTaskDef, 1},
		{"first start", w, "RunTask", 2},
		{"new runner", wAgain, opDescribeAccessPoints, 1},
		{"new runner", wAgain, opCreateAccessPoint, 0},
		{"new runner", wAgain, opDescribeTaskDef, 2},
		{"new runner", wAgain, opRegisterTaskDef, 0},
	}
	for _, c := range counts {
		if got := c.w.count(c.op); got != c.want {
			t.Errorf("%s: %s calls: got %d; want %d", c.name, c.op, got, c.want)
		}
	}

	aps, err := f.setupEFS.DescribeAccessPoints(ctx, &efs.DescribeAccessPointsInput{
		FileSystemId: aws.String(f.fileSystem),
	})
	if err != nil || len(aps.AccessPoints) != 1 {
		t.Fatalf("access points: got %v, %v; want one", aps, err)
	}
	ap := aps.AccessPoints[0]
	wantAP := efstypes.AccessPointDescription{
		RootDirectory: &efstypes.RootDirectory{Path: aws.String("/workspaces/stage/alice"),
			CreationInfo: &efstypes.CreationInfo{OwnerUid: aws.Int64(100001),
				OwnerGid: aws.Int64(100001), Permissions: aws.String("0700")}},
		PosixUser: &efstypes.PosixUser{Uid: aws.Int64(100001), Gid: aws.Int64(100001)},
	}
	if got, want := describeAP(ap), describeAP(wantAP); got != want {
		t.Errorf("access point: got %s; want %s", got, want)
	}
	if got := efsTags(ap.Tags)[TagUser]; got != "alice" {
		t.Errorf("access point tag %s: got %q; want alice", TagUser, got)
	}

	defs := map[string]bool{}
	for _, h := range []string{first, second, again} {
		defs[aws.ToString(f.task(t, h).TaskDefinitionArn)] = true
	}
	if len(defs) != 1 {
		t.Fatalf("task definitions of the three tasks: got %v; want one", defs)
	}
	var arn string
	for arn = range defs {
	}
	wantFamily := f.family + "-u-" + hashHex("alice")[:16]
	if !strings.HasSuffix(arn, "/"+wantFamily+":1") {
		t.Errorf("task definition: got %s; want %s:1", arn, wantFamily)
	}
	out, err := f.setupECS.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
		TaskDefinition: aws.String(arn), Include: []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
	})
	if err != nil {
		t.Fatalf("describe the user's task definition: %v", err)
	}
	td := out.TaskDefinition
	vol := td.Volumes[0].EfsVolumeConfiguration
	if got := aws.ToString(vol.AuthorizationConfig.AccessPointId); got != aws.ToString(ap.AccessPointId) {
		t.Errorf("volume's access point: got %s; want the user's, %s", got, aws.ToString(ap.AccessPointId))
	}
	if got := aws.ToString(td.ContainerDefinitions[0].MountPoints[0].ContainerPath); got != "/workspaces/alice" {
		t.Errorf("mount path: got %s; want /workspaces/alice", got)
	}
	if got := aws.ToString(td.TaskRoleArn); got != cfg.TaskRoleArn {
		t.Errorf("task role: got %s; want %s", got, cfg.TaskRoleArn)
	}
	tags := ecsTags(out.Tags)
	if tags[TagUser] != "alice" || tags[TagEnv] != "stage" || tags["team"] != "shell" ||
		!strings.HasSuffix(tags[TagBase], "/"+f.family+":1") {
		t.Errorf("task definition tags: got %v; want the user, env, base, and the base's own", tags)
	}

	// Only the start that made them spent time on them.
	if ap, reg := r.StartTimings(second); ap != 0 || reg != 0 {
		t.Errorf("StartTimings of a cached start: got %d, %d; want 0, 0", ap, reg)
	}
	if ap, reg := r.StartTimings("arn:unknown"); ap != 0 || reg != 0 {
		t.Errorf("StartTimings of an unknown task: got %d, %d; want 0, 0", ap, reg)
	}
}

func TestPerUserModeConcurrentFirstStartsMakeOne(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.SharedAccessPoint = false
	w := &wire{}
	r := f.runner(cfg, w)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = r.Run(context.Background(), session.TaskSpec{
				TaskID: "t_" + string(rune('a'+i)), SessionID: "s_b", UserID: "bob", UID: 100002})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Run %d: %v", i, err)
		}
	}
	for _, op := range []string{opCreateAccessPoint, opRegisterTaskDef} {
		if got := w.count(op); got != 1 {
			t.Errorf("%s calls: got %d; want 1", op, got)
		}
	}
}

func TestPerUserModeFailuresAreNotCached(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.SharedAccessPoint = false
	w := &wire{}
	r := f.runner(cfg, w)
	ctx := context.Background()
	carol := session.TaskSpec{SessionID: "s_c", UserID: "carol", UID: 100003}

	w.answerWith(opCreateAccessPoint, awsError(403, "AccessPointLimitExceeded", "too many access points"))
	carol.TaskID = "t_1"
	_, err := r.Run(ctx, carol)
	if got := session.ErrorCode(err); got != "AccessPointLimitExceeded" ||
		!strings.Contains(err.Error(), "create access point /workspaces/stage/carol") {
		t.Errorf("first Run: got %v (code %q); want AccessPointLimitExceeded naming the step", err, got)
	}

	carol.TaskID = "t_2"
	if _, err := r.Run(ctx, carol); err != nil {
		t.Errorf("Run after the failure: %v", err)
	}

	for _, tc := range []session.TaskSpec{
		{TaskID: "t_3", SessionID: "s_d", UserID: "dave"},
		{TaskID: "t_4", SessionID: "s_d", UID: 100004},
	} {
		_, err := r.Run(ctx, tc)
		if got := session.ErrorCode(err); got != CodeInvalidSpec {
			t.Errorf("Run of %+v: got %v; want code %s", tc, err, CodeInvalidSpec)
		}
	}
}

// describeAP is what the test compares of an access point.
func describeAP(ap efstypes.AccessPointDescription) string {
	var b strings.Builder
	if rd := ap.RootDirectory; rd != nil {
		b.WriteString("root " + aws.ToString(rd.Path))
		if ci := rd.CreationInfo; ci != nil {
			b.WriteString(" created " + aws.ToString(ci.Permissions))
			b.WriteString(" " + itoa(ci.OwnerUid) + ":" + itoa(ci.OwnerGid))
		}
	}
	if pu := ap.PosixUser; pu != nil {
		b.WriteString(" as " + itoa(pu.Uid) + ":" + itoa(pu.Gid))
	}
	return b.String()
}

func itoa(p *int64) string { return strconv.FormatInt(aws.ToInt64(p), 10) }

func efsTags(tags []efstypes.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func ecsTags(tags []ecstypes.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
