// Package awse2e runs the end-to-end scenarios of relay/e2e with the relay
// in AWS mode. Sessions, warm tasks and relay heartbeats live in DynamoDB,
// the keys in Secrets Manager, and tasks go through ECS RunTask,
// DescribeTasks and StopTask, all served by one moto_server on loopback;
// the tasks themselves are played by real bridge processes running real
// shells on this machine. The control plane is the session Lambda's handler,
// called with API Gateway events. Every AWS call is recorded under the
// component that makes it and checked against shared/awsops/operations.json
// when the package's tests have passed.
package awse2e

import (
	"context"
	"errors"
	"fmt"
	"github.com/aishell/aishell/relay/internal/buildtest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/secrets"
)

// The package's shared world: one moto_server, the bridge binary, the
// recorder of every AWS call, the ECS cluster and task definition every test
// runs tasks on, and the keys' secret.
var (
	moto      *awstest.Moto
	bridgeBin string
	ops       = awsops.NewRecorder()
	cluster   ecsWorld
)

// secretID names the keys' secret in moto.
const secretID = "aishell-e2e-keys"

// ecsWorld is what the ECS runner is pointed at: a cluster, the fixed task
// definition, and a subnet and security group of moto's default VPC.
type ecsWorld struct {
	name, taskDefinition, container string
	subnet, group                   string
}

// knownUnlisted are recorded AWS actions that operations.json does not
// list yet: known bugs, reported, each with what is wrong. They are
// printed, not failed, like a skipped test; anything else unlisted fails
// the package.
var knownUnlisted = map[string]string{}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	moto, err = awstest.Start()
	if errors.Is(err, awstest.ErrNoMoto) {
		// Every test skips itself.
		return m.Run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer moto.Close()

	dir, err := os.MkdirTemp("", "aishell-awse2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBridge(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := prepareMoto(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "prepare moto: %v\nmoto said:\n%s\n", err, moto.Output())
		return 1
	}

	code := m.Run()
	if code == 0 {
		if err := checkOperations(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// buildBridge builds the bridge binary into dir, once for the package.
func buildBridge(dir string) error {
	built, err := buildtest.Build("bridge")
	if err != nil {
		return err
	}
	defer os.RemoveAll(built)
	bridgeBin = filepath.Join(dir, "bridge")
	return os.Rename(filepath.Join(built, "bridge"), bridgeBin)
}

// prepareMoto makes the world the product expects to find, with calls that
// are the test's own and go unrecorded: tasks that stay where they are put,
// the cluster with the fixed task definition, and the keys' secret.
func prepareMoto(ctx context.Context) error {
	if err := moto.ManualECSTasks(ctx); err != nil {
		return err
	}
	base = moto.Config()
	cfg := base

	vpcs := ec2.NewFromConfig(cfg)
	subnets, err := vpcs.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{
		{Name: aws.String("default-for-az"), Values: []string{"true"}},
	}})
	if err != nil || len(subnets.Subnets) == 0 {
		return fmt.Errorf("find a default subnet: %v (%d found)", err, len(subnets.Subnets))
	}
	vpc := aws.ToString(subnets.Subnets[0].VpcId)
	groups, err := vpcs.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{
			{Name: aws.String("group-name"), Values: []string{"default"}},
			{Name: aws.String("vpc-id"), Values: []string{vpc}},
		},
	})
	if err != nil || len(groups.SecurityGroups) == 0 {
		return fmt.Errorf("find the default security group: %v", err)
	}
	cluster = ecsWorld{
		name: "aishell-e2e", taskDefinition: "aishell-e2e-agent", container: "agent",
		subnet: aws.ToString(subnets.Subnets[0].SubnetId),
		group:  aws.ToString(groups.SecurityGroups[0].GroupId),
	}

	tasks := ecs.NewFromConfig(cfg)
	if _, err := tasks.CreateCluster(ctx, &ecs.CreateClusterInput{
		ClusterName: aws.String(cluster.name),
	}); err != nil {
		return fmt.Errorf("create cluster: %w", err)
	}
	if _, err := tasks.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family:                  aws.String(cluster.taskDefinition),
		NetworkMode:             ecstypes.NetworkModeAwsvpc,
		RequiresCompatibilities: []ecstypes.Compatibility{ecstypes.CompatibilityFargate},
		Cpu:                     aws.String("256"),
		Memory:                  aws.String("512"),
		ContainerDefinitions: []ecstypes.ContainerDefinition{{
			Name:  aws.String(cluster.container),
			Image: aws.String("aishell/agent:e2e"),
			// moto gap: a container definition needs memory or
			// memoryReservation, which real ECS leaves optional on Fargate.
			MemoryReservation: aws.Int32(512),
			Essential:         aws.Bool(true),
		}},
	}); err != nil {
		return fmt.Errorf("register the fixed task definition: %w", err)
	}

	value, err := secrets.NewSecretValue()
	if err != nil {
		return err
	}
	if _, err := secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String(secretID), SecretString: aws.String(value),
	}); err != nil {
		return fmt.Errorf("create the keys' secret: %w", err)
	}
	return nil
}

// checkOperations fails when a component called an AWS action that
// operations.json does not list for it, bar the known bugs. With
// AWSOPS_UPDATE=1 it adds them to the file instead (awsops.Check).
func checkOperations() error {
	if os.Getenv("AWSOPS_UPDATE") == "1" {
		return ops.Check()
	}
	missing, err := ops.Missing()
	if err != nil {
		return err
	}
	var unknown []string
	for _, m := range missing {
		if why, ok := knownUnlisted[m]; ok {
			fmt.Fprintf(os.Stderr, "known bug: %s is called but not in operations.json: %s\n", m, why)
			continue
		}
		unknown = append(unknown, m)
	}
	recorded := ops.Ops()
	for m := range knownUnlisted {
		component, action, _ := strings.Cut(m, ": ")
		if slices.Contains(recorded[component], action) && !slices.Contains(missing, m) {
			fmt.Fprintf(os.Stderr, "%s is listed now: drop it from knownUnlisted\n", m)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("AWS actions called but not listed in shared/awsops/operations.json:\n  %s",
			strings.Join(unknown, "\n  "))
	}
	return nil
}
