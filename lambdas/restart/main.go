// Command restart is the restart state machine's steps Lambda (R5): it
// carries out StopOldTask, StartTask, WaitRunning and WaitConnection's
// register_connection_wait with the session rules on DynamoDB and ECS
// (controlplane.StepsFromEnv wires them; its tests cover this Lambda).
// `make lambdas` builds it as bootstrap for provided.al2023.
package main

import (
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/controlplane"
)

func main() {
	controlplane.ServeSteps(awsops.RestartLambda)
}
