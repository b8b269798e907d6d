package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/ticket"
)

// devTokenTTL is how long a development token is valid.
const devTokenTTL = 12 * time.Hour

// devToken answers {"token": "<jwt>"} for ?user=NAME, on one machine only.
func (s *Server) devToken(w http.ResponseWriter, r *http.Request) {
	if s.refusePeer(w, r) {
		return
	}
	user := r.URL.Query().Get("user")
	if user == "" || len(user) > 128 {
		writeAPIError(w, http.StatusBadRequest, sessionapi.CodeBadRequest, "user must be 1 to 128 bytes")
		return
	}
	tok, err := ticket.SignDevJWT(s.o.DevJWTKey, user, s.o.Clock.Now(), devTokenTTL)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, sessionapi.CodeBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"token": tok})
}

// api passes a request to the session API handler as API Gateway would:
// the JWT checked (here against the development key), its claims put in
// the authorizer context, the body as a string.
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeAPIError(w, http.StatusUnauthorized, sessionapi.CodeUnauthorized, "missing Authorization: Bearer <token>")
		return
	}
	claims, err := ticket.VerifyDevJWT(s.o.DevJWTKey, token, s.o.Clock.Now())
	if err != nil {
		msg := "bad token: " + err.Error()
		if errors.Is(err, ticket.ErrExpired) {
			msg = "token expired"
		}
		writeAPIError(w, http.StatusUnauthorized, sessionapi.CodeUnauthorized, msg)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, sessionapi.MaxBody+1))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, sessionapi.CodeBadRequest, "read body: "+err.Error())
		return
	}

	headers := map[string]string{}
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	req := events.APIGatewayV2HTTPRequest{
		Version:  "2.0",
		RawPath:  r.URL.Path,
		Headers:  headers,
		Body:     string(body),
		RouteKey: r.Method + " " + r.URL.Path,
	}
	req.RequestContext.HTTP.Method = r.Method
	req.RequestContext.HTTP.Path = r.URL.Path
	req.RequestContext.HTTP.SourceIP = r.RemoteAddr
	req.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
		JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{
			Claims: map[string]string{"sub": claims.Sub, "iss": claims.Iss},
		},
	}

	resp, err := s.o.API.Handle(r.Context(), req)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, sessionapi.CodeInternal, err.Error())
		return
	}
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	w.WriteHeader(resp.StatusCode)
	io.WriteString(w, resp.Body)
}

func writeAPIError(w http.ResponseWriter, status int, code, msg string) {
	var e sessionapi.ErrorObject
	e.Error.Code, e.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}
