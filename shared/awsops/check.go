package awsops

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Check is for the TestMain of an integration test package: after the
// tests ran, it fails (returns an error) when the code called an action
// that operations.json does not list. With AWSOPS_UPDATE=1 it adds them to
// the file instead, for the change to be reviewed with the policy.
func (r *Recorder) Check() error {
	if os.Getenv("AWSOPS_UPDATE") == "1" {
		_, file, _, _ := runtime.Caller(0)
		return r.Update(filepath.Join(filepath.Dir(file), "operations.json"))
	}
	missing, err := r.Missing()
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("AWS operations called but not listed in shared/awsops/operations.json "+
			"(so no IAM test covers them); add them with AWSOPS_UPDATE=1 and grant them in infra:\n  %s",
			strings.Join(missing, "\n  "))
	}
	return nil
}
