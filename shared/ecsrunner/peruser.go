package ecsrunner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/efs"
	efstypes "github.com/aws/aws-sdk-go-v2/service/efs/types"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/workspace"
)

// AccessPointRoot is the EFS folder under which per-user access points are
// rooted: AccessPointRoot/{env}/{the user's workspace folder name}, the
// same folder the user has under the environment's shared access point.
const AccessPointRoot = "/workspaces"

// userDefinitions caches the per-user task definitions of per-user mode.
// Its fields are guarded by Runner.mu.
type userDefinitions struct {
	byUser map[string]*userDefinition
	// base is the fixed task definition and its tags, read once.
	base     *ecstypes.TaskDefinition
	baseTags []ecstypes.Tag
}

// userDefinition is one user's task definition, being found or made until
// ready is closed; then arn or err is set and never changes.
type userDefinition struct {
	ready chan struct{}
	arn   string
	err   error
}

// userTaskDefinition returns the ARN of the task definition of spec's user,
// making the user's access point and task definition on the user's first
// start, and what that took. Concurrent starts of one user share the work.
func (r *Runner) userTaskDefinition(ctx context.Context, spec session.TaskSpec) (
	string, StartTiming, error) {
	if spec.UserID == "" || spec.UID <= 0 {
		return "", StartTiming{}, &session.CodedError{Code: CodeInvalidSpec,
			Err: fmt.Errorf("per-user task definition: want a user and a uid above 0, got %q and %d",
				spec.UserID, spec.UID)}
	}
	if r.efs == nil || r.cfg.FileSystemID == "" {
		return "", StartTiming{}, errors.New(
			"per-user task definition: no EFS client or file system id configured")
	}

	r.mu.Lock()
	d, found := r.users.byUser[spec.UserID]
	if !found {
		d = &userDefinition{ready: make(chan struct{})}
		r.users.byUser[spec.UserID] = d
	}
	r.mu.Unlock()
	if found {
		select {
		case <-d.ready:
			return d.arn, StartTiming{}, d.err
		case <-ctx.Done():
			return "", StartTiming{}, fmt.Errorf("per-user task definition: %w", ctx.Err())
		}
	}

	var timing StartTiming
	d.arn, timing, d.err = r.provision(ctx, spec)
	if d.err != nil {
		// Not cached: the next start tries again.
		r.mu.Lock()
		delete(r.users.byUser, spec.UserID)
		r.mu.Unlock()
	}
	close(d.ready)
	return d.arn, timing, d.err
}

// provision finds or makes the user's access point, then the user's task
// definition on it.
func (r *Runner) provision(ctx context.Context, spec session.TaskSpec) (
	string, StartTiming, error) {
	var timing StartTiming
	t0 := time.Now()
	apID, err := r.userAccessPoint(ctx, spec.UserID, spec.UID)
	timing.AccessPointMs = since(t0)
	if err != nil {
		return "", timing, err
	}

	t0 = time.Now()
	arn, err := r.userDefinition(ctx, spec.UserID, apID)
	timing.RegisterMs = since(t0)
	return arn, timing, err
}

// userAccessPoint returns the id of the user's access point, creating it
// if the file system has none rooted at the user's folder.
func (r *Runner) userAccessPoint(ctx context.Context, userID string, uid int) (string, error) {
	name, err := workspace.Name(userID)
	if err != nil {
		return "", fmt.Errorf("user access point: %w", err)
	}
	root := path.Join(AccessPointRoot, r.cfg.Env, name)

	pages := efs.NewDescribeAccessPointsPaginator(r.efs,
		&efs.DescribeAccessPointsInput{FileSystemId: aws.String(r.cfg.FileSystemID)})
	for pages.HasMorePages() {
		var page *efs.DescribeAccessPointsOutput
		err := r.backoff.do(ctx, r.log, "DescribeAccessPoints", func() error {
			var err error
			page, err = pages.NextPage(ctx, efsOpt)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("find access point %s: %w", root, err)
		}
		for _, ap := range page.AccessPoints {
			if ap.RootDirectory != nil && aws.ToString(ap.RootDirectory.Path) == root && usable(ap) {
				return aws.ToString(ap.AccessPointId), nil
			}
		}
	}

	owner := int64(uid)
	in := &efs.CreateAccessPointInput{
		// The same token for the same user: two starts racing to create
		// the access point get one, the loser an AccessPointAlreadyExists.
		ClientToken:  aws.String("aishell-" + hashHex(r.cfg.Env + "/" + userID)[:40]),
		FileSystemId: aws.String(r.cfg.FileSystemID),
		// Every access through it is the user's, whoever the caller is.
		PosixUser: &efstypes.PosixUser{Uid: aws.Int64(owner), Gid: aws.Int64(owner)},
		RootDirectory: &efstypes.RootDirectory{
			Path: aws.String(root),
			CreationInfo: &efstypes.CreationInfo{
				OwnerUid: aws.Int64(owner), OwnerGid: aws.Int64(owner), Permissions: aws.String("0700"),
			},
		},
		Tags: []efstypes.Tag{
			{Key: aws.String("Name"), Value: aws.String(tagValue("aishell " + r.cfg.Env + " " + name))},
			{Key: aws.String(TagUser), Value: aws.String(tagValue(userID))},
			{Key: aws.String(TagEnv), Value: aws.String(tagValue(r.cfg.Env))},
		},
	}
	var out *efs.CreateAccessPointOutput
	err = r.backoff.do(ctx, r.log, "CreateAccessPoint", func() error {
		var err error
		out, err = r.efs.CreateAccessPoint(ctx, in, efsOpt)
		return err
	})
	var exists *efstypes.AccessPointAlreadyExists
	if errors.As(err, &exists) && aws.ToString(exists.AccessPointId) != "" {
		return aws.ToString(exists.AccessPointId), nil
	}
	if err != nil {
		return "", fmt.Errorf("create access point %s: %w", root, err)
	}
	id := aws.ToString(out.AccessPointId)
	logging.Event(ctx, r.log, slog.LevelInfo, "access_point_created", "user access point created",
		slog.String(logging.KeyUserID, userID), slog.String("accessPointId", id),
		slog.String("path", root))
	return id, nil
}

// usable reports whether an access point is there or on its way.
func usable(ap efstypes.AccessPointDescription) bool {
	switch ap.LifeCycleState {
	case efstypes.LifeCycleStateDeleting, efstypes.LifeCycleStateDeleted, efstypes.LifeCycleStateError:
		return false
	}
	return true
}

// userDefinition returns the ARN of the user's task definition on access
// point apID: the latest revision of the user's family if it was copied
// from the current fixed task definition onto apID, else a new revision.
func (r *Runner) userDefinition(ctx context.Context, userID, apID string) (string, error) {
	base, baseTags, err := r.baseDefinition(ctx)
	if err != nil {
		return "", err
	}
	fam := family(aws.ToString(base.Family)) + "-u-" + hashHex(userID)[:16]
	baseArn := aws.ToString(base.TaskDefinitionArn)

	var cur *ecs.DescribeTaskDefinitionOutput
	err = r.backoff.do(ctx, r.log, "DescribeTaskDefinition", func() error {
		var err error
		cur, err = r.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
			TaskDefinition: aws.String(fam),
			Include:        []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
		}, ecsOpt)
		return err
	})
	var unknown *ecstypes.ClientException
	switch {
	case errors.As(err, &unknown):
		// ECS's answer for a family with no revision yet.
	case err != nil:
		return "", fmt.Errorf("find task definition %s: %w", fam, err)
	case current(cur, apID, baseArn, r.cfg.FileSystemID):
		return aws.ToString(cur.TaskDefinition.TaskDefinitionArn), nil
	}

	name, err := workspace.Name(userID)
	if err != nil {
		return "", fmt.Errorf("register task definition %s: %w", fam, err)
	}
	in, err := userDefinitionInput(*base, baseTags, userDefinitionOptions{
		family: fam, accessPoint: apID, fileSystem: r.cfg.FileSystemID, folder: name,
		taskRole: r.cfg.TaskRoleArn, executionRole: r.cfg.ExecutionRoleArn,
		tags: []ecstypes.Tag{tag(TagUser, userID), tag(TagEnv, r.cfg.Env), tag(TagBase, baseArn)},
	})
	if err != nil {
		return "", fmt.Errorf("register task definition %s: %w", fam, err)
	}
	var out *ecs.RegisterTaskDefinitionOutput
	err = r.backoff.do(ctx, r.log, "RegisterTaskDefinition", func() error {
		var err error
		out, err = r.ecs.RegisterTaskDefinition(ctx, in, ecsOpt)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("register task definition %s: %w", fam, err)
	}
	arn := aws.ToString(out.TaskDefinition.TaskDefinitionArn)
	logging.Event(ctx, r.log, slog.LevelInfo, "task_definition_registered",
		"user task definition registered", slog.String(logging.KeyUserID, userID),
		slog.String("taskDefinition", arn), slog.String("accessPointId", apID))
	return arn, nil
}

// current reports whether a described per-user task definition is active,
// copied from baseArn, and mounts access point apID.
func current(out *ecs.DescribeTaskDefinitionOutput, apID, baseArn, fileSystem string) bool {
	td := out.TaskDefinition
	if td == nil || td.Status != ecstypes.TaskDefinitionStatusActive {
		return false
	}
	copiedFrom := ""
	for _, t := range out.Tags {
		if aws.ToString(t.Key) == TagBase {
			copiedFrom = aws.ToString(t.Value)
		}
	}
	if copiedFrom != baseArn {
		return false
	}
	for _, v := range td.Volumes {
		efsv := v.EfsVolumeConfiguration
		if efsv != nil && aws.ToString(efsv.FileSystemId) == fileSystem {
			auth := efsv.AuthorizationConfig
			return auth != nil && aws.ToString(auth.AccessPointId) == apID
		}
	}
	return false
}

// baseDefinition returns the fixed task definition and its tags, read
// once per Runner: a new revision reaches the Lambdas with a deployment.
func (r *Runner) baseDefinition(ctx context.Context) (
	*ecstypes.TaskDefinition, []ecstypes.Tag, error) {
	r.mu.Lock()
	base, tags := r.users.base, r.users.baseTags
	r.mu.Unlock()
	if base != nil {
		return base, tags, nil
	}

	var out *ecs.DescribeTaskDefinitionOutput
	err := r.backoff.do(ctx, r.log, "DescribeTaskDefinition", func() error {
		var err error
		out, err = r.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{
			TaskDefinition: aws.String(r.cfg.TaskDefinition),
			Include:        []ecstypes.TaskDefinitionField{ecstypes.TaskDefinitionFieldTags},
		}, ecsOpt)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read task definition %s: %w", r.cfg.TaskDefinition, err)
	}
	if out.TaskDefinition == nil {
		return nil, nil, fmt.Errorf("read task definition %s: ECS answered without it",
			r.cfg.TaskDefinition)
	}
	r.mu.Lock()
	r.users.base, r.users.baseTags = out.TaskDefinition, out.Tags
	r.mu.Unlock()
	return out.TaskDefinition, out.Tags, nil
}

// userDefinitionOptions is what makes a copy of the fixed task definition
// one user's.
type userDefinitionOptions struct {
	family      string
	accessPoint string
	fileSystem  string
	// folder is the user's workspace folder name (workspace.Name).
	folder string
	// taskRole and executionRole replace the base's when set.
	taskRole      string
	executionRole string
	tags          []ecstypes.Tag
}

// userDefinitionInput copies the fixed task definition base into a
// registration of a user's task definition: its volumes of the file system
// use the user's access point instead, and each container mounts them one
// folder deeper, at {mount path}/{user's folder}. So the bridge, which
// looks for the user's folder under WORKSPACE_ROOT as with the shared
// access point, finds the user's access point there.
func userDefinitionInput(base ecstypes.TaskDefinition, baseTags []ecstypes.Tag,
	o userDefinitionOptions) (*ecs.RegisterTaskDefinitionInput, error) {
	mounted := map[string]bool{}
	volumes := make([]ecstypes.Volume, len(base.Volumes))
	for i, v := range base.Volumes {
		volumes[i] = v
		efsv := v.EfsVolumeConfiguration
		if efsv == nil || aws.ToString(efsv.FileSystemId) != o.fileSystem {
			continue
		}
		auth := ecstypes.EFSAuthorizationConfig{Iam: ecstypes.EFSAuthorizationConfigIAMEnabled}
		if efsv.AuthorizationConfig != nil {
			auth = *efsv.AuthorizationConfig
		}
		auth.AccessPointId = aws.String(o.accessPoint)
		copied := *efsv
		copied.AuthorizationConfig = &auth
		// ECS requires the root folder to be the access point's own, and
		// traffic to an access point to be encrypted.
		copied.RootDirectory = nil
		copied.TransitEncryption = ecstypes.EFSTransitEncryptionEnabled
		volumes[i].EfsVolumeConfiguration = &copied
		mounted[aws.ToString(v.Name)] = true
	}
	if len(mounted) == 0 {
		return nil, &session.CodedError{Code: CodeBadTaskDefinition,
			Err: fmt.Errorf("task definition %s has no volume of EFS file system %s",
				aws.ToString(base.TaskDefinitionArn), o.fileSystem)}
	}

	containers := make([]ecstypes.ContainerDefinition, len(base.ContainerDefinitions))
	for i, c := range base.ContainerDefinitions {
		mps := make([]ecstypes.MountPoint, len(c.MountPoints))
		for j, mp := range c.MountPoints {
			mps[j] = mp
			if mounted[aws.ToString(mp.SourceVolume)] {
				mps[j].ContainerPath = aws.String(path.Join(aws.ToString(mp.ContainerPath), o.folder))
			}
		}
		c.MountPoints = mps
		containers[i] = c
	}

	tags := append([]ecstypes.Tag(nil), o.tags...)
	for _, t := range baseTags {
		k := aws.ToString(t.Key)
		// aws: tags are ECS's own; aishell: tags are set above.
		if !strings.HasPrefix(k, "aws:") && !strings.HasPrefix(k, "aishell:") {
			tags = append(tags, t)
		}
	}
	taskRole, execRole := base.TaskRoleArn, base.ExecutionRoleArn
	if o.taskRole != "" {
		taskRole = aws.String(o.taskRole)
	}
	if o.executionRole != "" {
		execRole = aws.String(o.executionRole)
	}
	return &ecs.RegisterTaskDefinitionInput{
		Family:                        aws.String(o.family),
		ContainerDefinitions:          containers,
		Volumes:                       volumes,
		TaskRoleArn:                   taskRole,
		ExecutionRoleArn:              execRole,
		NetworkMode:                   base.NetworkMode,
		RequiresCompatibilities:       base.RequiresCompatibilities,
		Cpu:                           base.Cpu,
		Memory:                        base.Memory,
		PidMode:                       base.PidMode,
		IpcMode:                       base.IpcMode,
		PlacementConstraints:          base.PlacementConstraints,
		ProxyConfiguration:            base.ProxyConfiguration,
		InferenceAccelerators:         base.InferenceAccelerators,
		EphemeralStorage:              base.EphemeralStorage,
		RuntimePlatform:               base.RuntimePlatform,
		EnableFaultInjection:          base.EnableFaultInjection,
		TrustedExecutionConfiguration: base.TrustedExecutionConfiguration,
		Tags:                          tags,
	}, nil
}

// hashHex is the hex SHA-256 of s.
func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
