package sessionapi

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aishell/aishell/shared/localstore"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// runner is a task runner that starts nothing, or fails with runErr.
type runner struct {
	mu     sync.Mutex
	runErr error
	tasks  map[string]session.TaskState
}

func (r *runner) Run(_ context.Context, spec session.TaskSpec) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runErr != nil {
		return "", r.runErr
	}
	r.tasks[spec.TaskID] = session.TaskRunning
	return spec.TaskID, nil
}

func (r *runner) Stop(_ context.Context, h, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks[h] = session.TaskStopped
	return nil
}

func (r *runner) Describe(_ context.Context, h string) (session.TaskStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.tasks[h]
	if !ok {
		return session.TaskStatus{State: session.TaskStopped, StopReason: "unknown"}, nil
	}
	return session.TaskStatus{State: st}, nil
}

func newHandler(t *testing.T) (*Handler, *runner) {
	t.Helper()
	st, err := localstore.Open(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &runner{tasks: map[string]session.TaskState{}}
	svc := session.NewService(session.Config{RelayID: "r1"}, session.Deps{
		Store: st, Runner: r,
		Tickets: ticket.NewKeyring(ticket.NewKey()), TaskKeys: ticket.NewKeyring(ticket.NewKey()),
	})
	return &Handler{Svc: svc, RelayURL: "ws://relay/ws"}, r
}

func request(method, path, user, body string) events.APIGatewayV2HTTPRequest {
	req := events.APIGatewayV2HTTPRequest{RawPath: path, Body: body}
	req.RequestContext.HTTP.Method = method
	if user != "" {
		req.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
			JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{Claims: map[string]string{"sub": user}},
		}
	}
	return req
}

func call(t *testing.T, h *Handler, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	t.Helper()
	resp, err := h.Handle(context.Background(), req)
	if err != nil {
		t.Fatalf("handler error: %v", err)
	}
	return resp
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e ErrorObject
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error.Code
}

func TestSessionAPI(t *testing.T) {
	h, _ := newHandler(t)
	created := call(t, h, request("POST", "/api/sessions", "alice", "{}"))
	if created.StatusCode != 201 {
		t.Fatalf("create: %d %s; want 201", created.StatusCode, created.Body)
	}
	var s SessionObject
	json.Unmarshal([]byte(created.Body), &s)
	if !strings.HasPrefix(s.SessionID, "s_") || s.State != "starting" || s.RelayURL != "ws://relay/ws" || s.Ticket == "" {
		t.Errorf("session object %+v", s)
	}

	tests := []struct {
		name   string
		req    events.APIGatewayV2HTTPRequest
		status int
		code   string
	}{
		{"no user", request("POST", "/api/sessions", "", "{}"), 401, CodeUnauthorized},
		{"resume", request("POST", "/api/sessions", "alice", `{"resume":"`+s.SessionID+`"}`), 200, ""},
		{"stage prefix", request("GET", "/prod/sessions/"+s.SessionID, "alice", ""), 200, ""},
		{"get", request("GET", "/api/sessions/"+s.SessionID, "alice", ""), 200, ""},
		{"someone else's", request("GET", "/api/sessions/"+s.SessionID, "bob", ""), 403, CodeForbidden},
		{"resume someone else's", request("POST", "/api/sessions", "bob", `{"resume":"`+s.SessionID+`"}`), 403, CodeForbidden},
		{"unknown", request("GET", "/api/sessions/s_nope", "alice", ""), 404, CodeNotFound},
		{"resume unknown", request("POST", "/api/sessions", "alice", `{"resume":"s_nope"}`), 404, CodeNotFound},
		{"malformed body", request("POST", "/api/sessions", "alice", "{"), 400, CodeBadRequest},
		{"wrong type", request("POST", "/api/sessions", "alice", `{"resume":5}`), 400, CodeBadRequest},
		{"unknown field", request("POST", "/api/sessions", "alice", `{"resum":"x"}`), 400, CodeBadRequest},
		{"two values", request("POST", "/api/sessions", "alice", `{}{}`), 400, CodeBadRequest},
		{"too large", request("POST", "/api/sessions", "alice", `{"resume":"`+strings.Repeat("x", MaxBody)+`"}`), 400, CodeBadRequest},
		{"nested path", request("GET", "/api/sessions/a/b", "alice", ""), 404, "NOT_FOUND"},
		{"no route", request("GET", "/api/other", "alice", ""), 404, "NOT_FOUND"},
		{"wrong method", request("PUT", "/api/sessions/"+s.SessionID, "alice", ""), 405, "METHOD_NOT_ALLOWED"},
		{"delete someone else's", request("DELETE", "/api/sessions/"+s.SessionID, "bob", ""), 403, CodeForbidden},
		{"delete", request("DELETE", "/api/sessions/"+s.SessionID, "alice", ""), 204, ""},
		{"gone after delete", request("GET", "/api/sessions/"+s.SessionID, "alice", ""), 404, CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := call(t, h, tt.req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, resp.Body, tt.status)
			}
			if tt.code != "" {
				if got := errorCode(t, resp.Body); got != tt.code {
					t.Errorf("code %s; want %s", got, tt.code)
				}
			}
			if resp.Headers["Content-Type"] != "application/json" || resp.Headers["X-Request-Id"] == "" {
				t.Errorf("headers %v", resp.Headers)
			}
		})
	}
}

func TestStartFailuresMapToCodes(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter bool
	}{
		{"no capacity", &session.CodedError{Code: "NoCapacity", Err: errors.New("64 tasks run")}, 503, CodeNoCapacity, true},
		{"ECS capacity failure", &session.CodedError{Code: "RESOURCE:MEMORY", Err: errors.New("no memory")}, 503, CodeNoCapacity, true},
		{"access denied", &session.CodedError{Code: "AccessDeniedException", Err: errors.New("not allowed: ecs:RunTask")}, 500, CodeTaskStartFailed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, r := newHandler(t)
			r.runErr = tt.err
			resp := call(t, h, request("POST", "/sessions", "alice", ""))
			if resp.StatusCode != tt.status || errorCode(t, resp.Body) != tt.code {
				t.Fatalf("got %d %s; want %d %s", resp.StatusCode, resp.Body, tt.status, tt.code)
			}
			if got := resp.Headers["Retry-After"] != ""; got != tt.retryAfter {
				t.Errorf("Retry-After present %v; want %v", got, tt.retryAfter)
			}
			if !strings.Contains(resp.Body, tt.err.(*session.CodedError).Code) {
				t.Errorf("body %s does not name the cause's code", resp.Body)
			}
		})
	}
}
