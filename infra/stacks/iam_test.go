//go:build !race

package stacks_test

import (
	"encoding/json"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/aishell/aishell/infra/stacks"
	"github.com/aishell/aishell/shared/awsops"
)

// unscopable are the actions IAM authorizes only on "*" (no resource
// type in the Service Authorization Reference), so "*" is no defect there.
var unscopable = []string{
	"ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition",
	"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat",
	"logs:GetQueryResults", "logs:StopQuery", "logs:DescribeQueries", "logs:DescribeLogGroups",
	"xray:*", "ecr:GetAuthorizationToken",
	"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
	"ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
}

// scopingConditions are condition keys that confine a "*" resource to
// this environment (ListTasks names no task; ECS scopes it by cluster).
var scopingConditions = []string{"ecs:cluster"}

// implied are the actions a role may hold beyond its listed calls: what
// those calls need that is not a call (PassRole, tag-on-create), the
// Lambdas' own logs and network interfaces, and X-Ray (R16).
var implied = []string{
	"iam:PassRole", "ecs:TagResource", "elasticfilesystem:TagResource",
	"logs:CreateLogStream", "logs:PutLogEvents", "xray:*",
	"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
	"ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
}

// statement is one IAM policy statement as synthesized.
type statement struct {
	Effect    string
	Action    stringList
	Resource  json.RawMessage
	Condition map[string]map[string]json.RawMessage
}

// stringList reads an IAM field that is one string or a list of them.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	err := json.Unmarshal(b, &many)
	*l = many
	return err
}

// resources returns a statement's resources as JSON texts; a literal
// "*" is `"*"`, an intrinsic function its object.
func (s statement) resources() []string {
	var many []json.RawMessage
	if json.Unmarshal(s.Resource, &many) != nil {
		many = []json.RawMessage{s.Resource}
	}
	out := make([]string, len(many))
	for i, r := range many {
		out[i] = string(r)
	}
	return out
}

// matches reports whether IAM action pattern p (with * and ?) grants a.
func matches(p, a string) bool {
	ok, _ := path.Match(strings.ToLower(p), strings.ToLower(a))
	return ok
}

func anyMatches(patterns []string, a string) bool {
	for _, p := range patterns {
		if matches(p, a) {
			return true
		}
	}
	return false
}

// componentPolicies returns, per component tag, the statements of every
// policy attached to the component's role, and the role's managed
// policies.
func componentPolicies(t *testing.T, s *synthesized) (map[string][]statement, map[string][]interface{}) {
	t.Helper()
	stmts, managed := map[string][]statement{}, map[string][]interface{}{}
	roleOf := map[string]string{} // stack/logicalId of a role to its component
	for stack, tpl := range s.raw {
		for id, r := range tpl["Resources"].(map[string]interface{}) {
			m := r.(map[string]interface{})
			if m["Type"] != "AWS::IAM::Role" {
				continue
			}
			tags, _ := props(m)["Tags"].([]interface{})
			for _, tag := range tags {
				kv := tag.(map[string]interface{})
				if kv["Key"] == stacks.ComponentTag {
					c := kv["Value"].(string)
					if prev, dup := roleOf[stack+"/"+id]; dup {
						t.Fatalf("role %s/%s tagged %s and %s", stack, id, prev, c)
					}
					roleOf[stack+"/"+id] = c
					if _, ok := stmts[c]; !ok {
						stmts[c] = nil
					}
					if mp, ok := props(m)["ManagedPolicyArns"].([]interface{}); ok {
						managed[c] = append(managed[c], mp...)
					}
					for _, inline := range asList(props(m)["Policies"]) {
						stmts[c] = append(stmts[c], decodeStatements(t, inline.(map[string]interface{})["PolicyDocument"])...)
					}
				}
			}
		}
	}
	for stack, tpl := range s.raw {
		for _, r := range tpl["Resources"].(map[string]interface{}) {
			m := r.(map[string]interface{})
			if m["Type"] != "AWS::IAM::Policy" {
				continue
			}
			for _, role := range asList(props(m)["Roles"]) {
				ref, _ := role.(map[string]interface{})["Ref"].(string)
				if c, ok := roleOf[stack+"/"+ref]; ok {
					stmts[c] = append(stmts[c], decodeStatements(t, props(m)["PolicyDocument"])...)
				}
			}
		}
	}
	return stmts, managed
}

func asList(v interface{}) []interface{} {
	l, _ := v.([]interface{})
	return l
}

func decodeStatements(t *testing.T, doc interface{}) []statement {
	t.Helper()
	b, _ := json.Marshal(doc)
	var d struct{ Statement []statement }
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("policy document %s: %v", b, err)
	}
	return d.Statement
}

// TestEveryListedOperationIsAllowed proves R11: for each component of
// shared/awsops/operations.json, the synthesized policy of the role that
// runs its code allows every AWS call the code makes, on resources of
// this environment wherever IAM can scope the action.
func TestEveryListedOperationIsAllowed(t *testing.T) {
	listed, err := awsops.Listed()
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) == 0 {
		t.Fatal("shared/awsops/operations.json lists no component")
	}
	for _, variant := range []string{variantStage, variantProd, variantPerUser} {
		t.Run(variant, func(t *testing.T) {
			s := synth(t, variant)
			perUser := variantContext[variant]["useSharedAccessPoint"] == "false"
			policies, managed := componentPolicies(t, s)
			for component, actions := range listed {
				stmts, ok := policies[component]
				if !ok {
					t.Errorf("%s: no role tagged %s=%s", component, stacks.ComponentTag, component)
					continue
				}
				if len(managed[component]) > 0 {
					t.Errorf("%s: managed policies %v; want only the listed actions", component, managed[component])
				}
				for _, action := range actions {
					if !perUser && stacks.PerUserOnly[action] {
						continue // proved on the per-user variant
					}
					checkAllowed(t, component, action, stmts)
				}
			}
		})
	}
}

func checkAllowed(t *testing.T, component, action string, stmts []statement) {
	t.Helper()
	allowed := false
	for _, st := range stmts {
		if st.Effect != "Allow" || !anyMatches(st.Action, action) {
			continue
		}
		allowed = true
		for _, r := range st.resources() {
			if r != `"*"` || anyMatches(unscopable, action) {
				continue
			}
			scoped := false
			for _, keys := range st.Condition {
				for k := range keys {
					scoped = scoped || contains(scopingConditions, k)
				}
			}
			if !scoped {
				t.Errorf("%s: %s is granted on \"*\" though IAM can scope it", component, action)
			}
		}
	}
	if !allowed {
		t.Errorf("%s: %s is called by the code but not allowed by the role's policy", component, action)
	}
}

// TestRolesGrantNothingUnlisted is the other half of "exactly": a role
// holds no action beyond its component's listed calls and the implied
// ones.
func TestRolesGrantNothingUnlisted(t *testing.T) {
	listed, err := awsops.Listed()
	if err != nil {
		t.Fatal(err)
	}
	for _, variant := range []string{variantStage, variantPerUser} {
		t.Run(variant, func(t *testing.T) {
			policies, _ := componentPolicies(t, synth(t, variant))
			for component, stmts := range policies {
				var extra []string
				for _, st := range stmts {
					for _, a := range st.Action {
						if st.Effect == "Allow" && !contains(listed[component], a) && !anyMatches(implied, a) {
							extra = append(extra, a)
						}
					}
				}
				sort.Strings(extra)
				if len(extra) > 0 {
					t.Errorf("%s: granted but not listed in operations.json: %v", component, extra)
				}
			}
		})
	}
}

// TestTaskCallsAreConfinedToTheCluster checks the statements behind the
// old system's fault: DescribeTasks and StopTask on this cluster's tasks
// only, RunTask on the agent family in this cluster, PassRole on the
// agent task's roles to ECS only.
func TestTaskCallsAreConfinedToTheCluster(t *testing.T) {
	for _, variant := range []string{variantStage, variantProd} {
		t.Run(variant, func(t *testing.T) {
			s := synth(t, variant)
			policies, _ := componentPolicies(t, s)
			env := variantContext[variant]["env"]
			seen := map[string]bool{}
			for component, stmts := range policies {
				for _, st := range stmts {
					res := strings.Join(st.resources(), " ")
					for _, a := range st.Action {
						switch a {
						case "ecs:DescribeTasks", "ecs:StopTask", "ecs:RunTask":
							seen[a] = true
							if _, ok := st.Condition["ArnEquals"]["ecs:cluster"]; !ok {
								t.Errorf("%s: %s without the ecs:cluster condition", component, a)
							}
							want := ":task/"
							if a == "ecs:RunTask" {
								want = ":task-definition/aishell-" + env + "-agent:*"
							}
							if !strings.Contains(res, want) {
								t.Errorf("%s: %s on %s; want %s", component, a, res, want)
							}
						case "iam:PassRole":
							if strings.Contains(res, `"*"`) {
								t.Errorf("%s: PassRole on *", component)
							}
							if _, ok := st.Condition["StringEquals"]["iam:PassedToService"]; !ok {
								t.Errorf("%s: PassRole without iam:PassedToService", component)
							}
						}
					}
				}
			}
			if !seen["ecs:DescribeTasks"] {
				t.Errorf("no role may call ecs:DescribeTasks; the control plane needs it (R11)")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
