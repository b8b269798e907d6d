// Command refill is the refill state machine's steps Lambda (R8): it plans
// each relay's warm pool, starts and retires warm tasks, and reaps tasks
// that nothing owns, on DynamoDB and ECS (controlplane.StepsFromEnv wires
// them; its tests cover this Lambda). `make lambdas` builds it as bootstrap
// for provided.al2023.
package main

import (
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/controlplane"
)

func main() {
	controlplane.ServeSteps(awsops.RefillLambda)
}
