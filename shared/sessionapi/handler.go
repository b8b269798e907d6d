// Package sessionapi is the session HTTP API of protocol.md, written as an
// API Gateway HTTP API (payload 2.0) Lambda handler. The session Lambda runs
// it behind API Gateway's JWT authorizer; on one machine the relay serves
// the same handler under /api, checking development tokens itself.
package sessionapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aishell/aishell/shared/logging"
	"github.com/aishell/aishell/shared/session"
)

// MaxBody is the largest request body accepted.
const MaxBody = 16 << 10

// Error codes of the API's error bodies.
const (
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "SESSION_NOT_FOUND"
	CodeBadRequest      = "BAD_REQUEST"
	CodeNoCapacity      = "NO_CAPACITY"
	CodeTaskStartFailed = "TASK_START_FAILED"
	CodeInternal        = "INTERNAL"
)

// SessionObject is the session object of protocol.md.
type SessionObject struct {
	SessionID       string `json:"sessionId"`
	State           string `json:"state"`
	RelayURL        string `json:"relayUrl"`
	Ticket          string `json:"ticket"`
	TicketExpiresAt string `json:"ticketExpiresAt"`
	Warm            bool   `json:"warm"`
}

// ErrorObject is the body of an error answer.
type ErrorObject struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Handler serves the session API.
type Handler struct {
	Svc *session.Service
	// RelayURL is the client socket URL put in session objects whose
	// relay has none on record.
	RelayURL string
	Log      *slog.Logger
}

// Handle is the Lambda entry point.
func (h *Handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	start := time.Now()
	r := session.Request{TraceID: traceID(req), RequestID: req.RequestContext.RequestID}
	if r.RequestID == "" {
		r.RequestID = newRequestID()
	}
	base := h.Log
	if base == nil {
		base = logging.Discard()
	}
	log := logging.Module(base, "api").With(logging.KeyTraceID, r.TraceID, logging.KeyRequestID, r.RequestID)

	resp := h.route(ctx, log, r, req)
	if resp.Headers == nil {
		resp.Headers = map[string]string{}
	}
	resp.Headers["Content-Type"] = "application/json"
	resp.Headers["X-Request-Id"] = r.RequestID

	level := slog.LevelInfo
	if resp.StatusCode >= 500 {
		level = slog.LevelError
	}
	log.Log(ctx, level, "api request", logging.KeyEvent, "api_request",
		"method", req.RequestContext.HTTP.Method, "path", req.RawPath, "status", resp.StatusCode,
		logging.Duration(time.Since(start)))
	return resp, nil
}

func (h *Handler) route(ctx context.Context, log *slog.Logger, r session.Request, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	user := userID(req)
	if user == "" {
		return errorResponse(http.StatusUnauthorized, CodeUnauthorized, "no authenticated user (missing sub claim)")
	}
	log = log.With(logging.KeyUserID, user)

	method := req.RequestContext.HTTP.Method
	rest, ok := sessionsPath(req.RawPath)
	switch {
	case !ok:
		return errorResponse(http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no route %s %s", method, req.RawPath))
	case rest == "" && method == http.MethodPost:
		return h.createOrResume(ctx, log, r, user, req.Body)
	case rest != "" && method == http.MethodGet:
		v, err := h.Svc.GetView(ctx, user, rest)
		if err != nil {
			return h.failure(ctx, log, err)
		}
		return h.sessionResponse(http.StatusOK, v)
	case rest != "" && method == http.MethodDelete:
		if err := h.Svc.Delete(ctx, r, user, rest); err != nil {
			return h.failure(ctx, log, err)
		}
		return events.APIGatewayV2HTTPResponse{StatusCode: http.StatusNoContent}
	default:
		return errorResponse(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", fmt.Sprintf("%s not allowed on %s", method, req.RawPath))
	}
}

type createBody struct {
	// Resume is raw so that a present but empty or null id is told apart
	// from an absent one (a new session).
	Resume json.RawMessage `json:"resume"`
}

func (h *Handler) createOrResume(ctx context.Context, log *slog.Logger, r session.Request, user, body string) events.APIGatewayV2HTTPResponse {
	if len(body) > MaxBody {
		return errorResponse(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("body is over the %d byte limit", MaxBody))
	}
	var b createBody
	if strings.TrimSpace(body) != "" {
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			return errorResponse(http.StatusBadRequest, CodeBadRequest, "malformed body: "+err.Error())
		}
		if dec.More() {
			return errorResponse(http.StatusBadRequest, CodeBadRequest, "malformed body: more than one JSON value")
		}
	}

	if b.Resume != nil {
		var id string
		if err := json.Unmarshal(b.Resume, &id); err != nil || id == "" {
			return errorResponse(http.StatusBadRequest, CodeBadRequest,
				"resume must name a session id; send {} for a new session")
		}
		v, err := h.Svc.Resume(ctx, r, user, id)
		if err != nil {
			return h.failure(ctx, log, err)
		}
		return h.sessionResponse(http.StatusOK, v)
	}
	v, err := h.Svc.Create(ctx, r, user)
	if err != nil {
		return h.failure(ctx, log, err)
	}
	return h.sessionResponse(http.StatusCreated, v)
}

func (h *Handler) sessionResponse(status int, v session.View) events.APIGatewayV2HTTPResponse {
	relayURL := v.RelayURL
	if relayURL == "" {
		relayURL = h.RelayURL
	}
	body, _ := json.Marshal(SessionObject{
		SessionID:       v.Session.ID,
		State:           string(v.Session.State),
		RelayURL:        relayURL,
		Ticket:          v.Ticket,
		TicketExpiresAt: v.TicketExpiresAt.UTC().Format(time.RFC3339),
		Warm:            v.Session.Warm,
	})
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Body: string(body)}
}

// failure maps an error of the session rules to its answer, and logs the
// ones that are the server's fault.
func (h *Handler) failure(ctx context.Context, log *slog.Logger, err error) events.APIGatewayV2HTTPResponse {
	var se *session.StartError
	switch {
	case errors.Is(err, session.ErrNotFound):
		return errorResponse(http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, session.ErrForbidden):
		return errorResponse(http.StatusForbidden, CodeForbidden, err.Error())
	case session.IsCapacity(err):
		resp := errorResponse(http.StatusServiceUnavailable, CodeNoCapacity, err.Error())
		resp.Headers = map[string]string{"Retry-After": "5"}
		return resp
	case errors.As(err, &se):
		return errorResponse(http.StatusInternalServerError, CodeTaskStartFailed, err.Error())
	default:
		log.ErrorContext(ctx, "api request failed", logging.KeyEvent, "api_error", "error", err.Error())
		return errorResponse(http.StatusInternalServerError, CodeInternal, err.Error())
	}
}

func errorResponse(status int, code, msg string) events.APIGatewayV2HTTPResponse {
	var e ErrorObject
	e.Error.Code, e.Error.Message = code, msg
	body, _ := json.Marshal(e)
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Body: string(body)}
}

// sessionsPath finds "/sessions" in the path, after any stage or base
// prefix, and returns what follows it without the slash.
func sessionsPath(p string) (string, bool) {
	i := strings.Index(p, "/sessions")
	if i < 0 {
		return "", false
	}
	rest := p[i+len("/sessions"):]
	if rest == "" || rest == "/" {
		return "", true
	}
	if !strings.HasPrefix(rest, "/") || strings.Contains(rest[1:], "/") {
		return "", false
	}
	return rest[1:], true
}

// userID reads the sub claim put there by API Gateway's JWT authorizer (or
// the local development authorizer).
func userID(req events.APIGatewayV2HTTPRequest) string {
	if req.RequestContext.Authorizer == nil || req.RequestContext.Authorizer.JWT == nil {
		return ""
	}
	return req.RequestContext.Authorizer.JWT.Claims["sub"]
}

// traceID takes the X-Ray trace id from the X-Amzn-Trace-Id header (Root=),
// or makes one in the X-Ray format so that logs of one request join up.
func traceID(req events.APIGatewayV2HTTPRequest) string {
	for k, v := range req.Headers {
		if strings.EqualFold(k, "x-amzn-trace-id") {
			for _, part := range strings.Split(v, ";") {
				if root, ok := strings.CutPrefix(strings.TrimSpace(part), "Root="); ok {
					return root
				}
			}
		}
	}
	return NewTraceID(time.Now())
}

// NewTraceID returns a trace id in the X-Ray format.
func NewTraceID(now time.Time) string {
	b := make([]byte, 12)
	rand.Read(b)
	return fmt.Sprintf("1-%08x-%s", now.Unix(), hex.EncodeToString(b))
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
