package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/ticket"
)

// control serves the relay's control API (relayclient): the control
// plane, authenticated by a control token signed with the task keys, hands
// warm tasks their user and reports session changes.
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeAPIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "missing control token")
		return
	}
	claims, err := s.o.TaskKeys.Verify(token, ticket.KindControl, s.o.Clock.Now())
	if err != nil {
		writeAPIError(w, http.StatusUnauthorized, "UNAUTHORIZED", "control token refused: "+err.Error())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "BAD_REQUEST", "read body: "+err.Error())
		return
	}

	switch r.URL.Path {
	case relayclient.PathInitUser:
		var b relayclient.InitUserBody
		if err := json.Unmarshal(body, &b); err != nil || b.SessionID != claims.SessionID || b.TaskID == "" {
			writeAPIError(w, http.StatusBadRequest, "BAD_REQUEST", "init_user body does not match its token")
			return
		}
		if err := s.o.Hub.InitUser(r.Context(), session.InitUser{
			TaskID: b.TaskID, SessionID: b.SessionID, UserID: b.UserID, UID: b.UID, TraceID: b.TraceID,
		}); err != nil {
			writeAPIError(w, http.StatusNotFound, "WARM_TASK_GONE", err.Error())
			return
		}
	case relayclient.PathSessionChanged, relayclient.PathSessionEnded:
		var b relayclient.SessionBody
		if err := json.Unmarshal(body, &b); err != nil || b.SessionID != claims.SessionID {
			writeAPIError(w, http.StatusBadRequest, "BAD_REQUEST", "body does not match its token")
			return
		}
		if r.URL.Path == relayclient.PathSessionEnded {
			s.o.Hub.SessionEnded(b.SessionID)
		} else {
			s.o.Hub.SessionChanged(b.SessionID)
		}
	default:
		writeAPIError(w, http.StatusNotFound, "NOT_FOUND", "no control call "+r.URL.Path)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
