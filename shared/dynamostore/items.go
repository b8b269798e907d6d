package dynamostore

import (
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/session"
)

// stampLayout writes times with a fixed width, so that string order is time
// order.
const stampLayout = "2006-01-02T15:04:05.000000000Z07:00"

// stamp returns t as stored, "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(stampLayout)
}

// keyStamp returns t as stored in an index's sort key: the zero time too,
// so that every record has the key and appears in the index.
func keyStamp(t time.Time) string {
	return t.UTC().Format(stampLayout)
}

// parseStamp reads a stored time; "" and the zero time give time.Time{}.
func parseStamp(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("attribute %s: %w", field, err)
	}
	if t.IsZero() {
		return time.Time{}, nil
	}
	return t.UTC(), nil
}

// sessionItem is a session as stored in the Sessions table.
type sessionItem struct {
	ID              string    `dynamodbav:"id"`
	UserID          string    `dynamodbav:"userId,omitempty"`
	State           string    `dynamodbav:"state,omitempty"`
	RelayID         string    `dynamodbav:"relayId,omitempty"`
	TaskID          string    `dynamodbav:"taskId,omitempty"`
	TaskHandle      string    `dynamodbav:"taskHandle,omitempty"`
	Warm            bool      `dynamodbav:"warm"`
	Start           startItem `dynamodbav:"start"`
	Restarts        int       `dynamodbav:"restarts"`
	TraceID         string    `dynamodbav:"traceId,omitempty"`
	ConnectToken    string    `dynamodbav:"connectToken,omitempty"`
	ConnectedTaskID string    `dynamodbav:"connectedTaskId,omitempty"`
	CreatedAt       string    `dynamodbav:"createdAt"`
	UpdatedAt       string    `dynamodbav:"updatedAt,omitempty"`
	Version         int64     `dynamodbav:"version"`
}

// startItem is a session's StartRecord, stored as a map.
type startItem struct {
	At                string `dynamodbav:"at,omitempty"`
	Restart           bool   `dynamodbav:"restart"`
	AccessPointMs     int64  `dynamodbav:"accessPointMs"`
	RegisterTaskDefMs int64  `dynamodbav:"registerTaskDefMs"`
	RunTaskMs         int64  `dynamodbav:"runTaskMs"`
	WarmClaimMs       int64  `dynamodbav:"warmClaimMs"`
}

func marshalSession(s session.Session) (map[string]types.AttributeValue, error) {
	item := sessionItem{
		ID:              s.ID,
		UserID:          s.UserID,
		State:           string(s.State),
		RelayID:         s.RelayID,
		TaskID:          s.TaskID,
		TaskHandle:      s.TaskHandle,
		Warm:            s.Warm,
		Restarts:        s.Restarts,
		TraceID:         s.TraceID,
		ConnectToken:    s.ConnectToken,
		ConnectedTaskID: s.ConnectedTaskID,
		CreatedAt:       keyStamp(s.CreatedAt),
		UpdatedAt:       stamp(s.UpdatedAt),
		Version:         s.Version,
		Start: startItem{
			At:                stamp(s.Start.At),
			Restart:           s.Start.Restart,
			AccessPointMs:     s.Start.AccessPointMs,
			RegisterTaskDefMs: s.Start.RegisterTaskDefMs,
			RunTaskMs:         s.Start.RunTaskMs,
			WarmClaimMs:       s.Start.WarmClaimMs,
		},
	}
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return nil, fmt.Errorf("encode session: %w", err)
	}
	return av, nil
}

func unmarshalSession(av map[string]types.AttributeValue) (session.Session, error) {
	var item sessionItem
	if err := attributevalue.UnmarshalMap(av, &item); err != nil {
		return session.Session{}, fmt.Errorf("decode session: %w", err)
	}
	s := session.Session{
		ID:              item.ID,
		UserID:          item.UserID,
		State:           session.State(item.State),
		RelayID:         item.RelayID,
		TaskID:          item.TaskID,
		TaskHandle:      item.TaskHandle,
		Warm:            item.Warm,
		Restarts:        item.Restarts,
		TraceID:         item.TraceID,
		ConnectToken:    item.ConnectToken,
		ConnectedTaskID: item.ConnectedTaskID,
		Version:         item.Version,
		Start: session.StartRecord{
			Restart:           item.Start.Restart,
			AccessPointMs:     item.Start.AccessPointMs,
			RegisterTaskDefMs: item.Start.RegisterTaskDefMs,
			RunTaskMs:         item.Start.RunTaskMs,
			WarmClaimMs:       item.Start.WarmClaimMs,
		},
	}
	var err error
	if s.CreatedAt, err = parseStamp("createdAt", item.CreatedAt); err != nil {
		return session.Session{}, fmt.Errorf("decode session %s: %w", item.ID, err)
	}
	if s.UpdatedAt, err = parseStamp("updatedAt", item.UpdatedAt); err != nil {
		return session.Session{}, fmt.Errorf("decode session %s: %w", item.ID, err)
	}
	if s.Start.At, err = parseStamp("start.at", item.Start.At); err != nil {
		return session.Session{}, fmt.Errorf("decode session %s: %w", item.ID, err)
	}
	return s, nil
}

// warmItem is a warm task as stored in the WarmTasks table.
type warmItem struct {
	ID        string `dynamodbav:"id"`
	Handle    string `dynamodbav:"handle,omitempty"`
	RelayID   string `dynamodbav:"relayId,omitempty"`
	State     string `dynamodbav:"state,omitempty"`
	StartedAt string `dynamodbav:"startedAt"`
	ReadyAt   string `dynamodbav:"readyAt,omitempty"`
	ClaimedAt string `dynamodbav:"claimedAt,omitempty"`
	SessionID string `dynamodbav:"sessionId,omitempty"`
	Version   int64  `dynamodbav:"version"`
	ExpiresAt int64  `dynamodbav:"expiresAt,omitempty"`
}

func marshalWarm(w session.WarmTask) (map[string]types.AttributeValue, error) {
	item := warmItem{
		ID:        w.ID,
		Handle:    w.Handle,
		RelayID:   w.RelayID,
		State:     string(w.State),
		StartedAt: keyStamp(w.StartedAt),
		ReadyAt:   stamp(w.ReadyAt),
		ClaimedAt: stamp(w.ClaimedAt),
		SessionID: w.SessionID,
		Version:   w.Version,
	}
	if !w.StartedAt.IsZero() {
		item.ExpiresAt = w.StartedAt.Add(WarmTaskTTL).Unix()
	}
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return nil, fmt.Errorf("encode warm task: %w", err)
	}
	return av, nil
}

func unmarshalWarm(av map[string]types.AttributeValue) (session.WarmTask, error) {
	var item warmItem
	if err := attributevalue.UnmarshalMap(av, &item); err != nil {
		return session.WarmTask{}, fmt.Errorf("decode warm task: %w", err)
	}
	w := session.WarmTask{
		ID:        item.ID,
		Handle:    item.Handle,
		RelayID:   item.RelayID,
		State:     session.WarmState(item.State),
		SessionID: item.SessionID,
		Version:   item.Version,
	}
	var err error
	if w.StartedAt, err = parseStamp("startedAt", item.StartedAt); err != nil {
		return session.WarmTask{}, fmt.Errorf("decode warm task %s: %w", item.ID, err)
	}
	if w.ReadyAt, err = parseStamp("readyAt", item.ReadyAt); err != nil {
		return session.WarmTask{}, fmt.Errorf("decode warm task %s: %w", item.ID, err)
	}
	if w.ClaimedAt, err = parseStamp("claimedAt", item.ClaimedAt); err != nil {
		return session.WarmTask{}, fmt.Errorf("decode warm task %s: %w", item.ID, err)
	}
	return w, nil
}

// relayItem is a relay as stored in the Relays table.
type relayItem struct {
	ID          string `dynamodbav:"id"`
	ClientURL   string `dynamodbav:"clientUrl,omitempty"`
	TaskURL     string `dynamodbav:"taskUrl,omitempty"`
	ControlURL  string `dynamodbav:"controlUrl,omitempty"`
	HeartbeatAt string `dynamodbav:"heartbeatAt,omitempty"`
	ExpiresAt   int64  `dynamodbav:"expiresAt,omitempty"`
}

func marshalRelay(r session.Relay) (map[string]types.AttributeValue, error) {
	item := relayItem{
		ID:          r.ID,
		ClientURL:   r.ClientURL,
		TaskURL:     r.TaskURL,
		ControlURL:  r.ControlURL,
		HeartbeatAt: stamp(r.HeartbeatAt),
	}
	if !r.HeartbeatAt.IsZero() {
		item.ExpiresAt = r.HeartbeatAt.Add(RelayTTL).Unix()
	}
	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return nil, fmt.Errorf("encode relay: %w", err)
	}
	return av, nil
}

func unmarshalRelay(av map[string]types.AttributeValue) (session.Relay, error) {
	var item relayItem
	if err := attributevalue.UnmarshalMap(av, &item); err != nil {
		return session.Relay{}, fmt.Errorf("decode relay: %w", err)
	}
	r := session.Relay{
		ID:         item.ID,
		ClientURL:  item.ClientURL,
		TaskURL:    item.TaskURL,
		ControlURL: item.ControlURL,
	}
	var err error
	if r.HeartbeatAt, err = parseStamp("heartbeatAt", item.HeartbeatAt); err != nil {
		return session.Relay{}, fmt.Errorf("decode relay %s: %w", item.ID, err)
	}
	return r, nil
}

// userItem is a user's uid as stored in the Users table.
type userItem struct {
	Key    string `dynamodbav:"userId"`
	UserID string `dynamodbav:"user"`
	UID    int    `dynamodbav:"uid"`
}

// Keys of the Users table.
const (
	userKeyPrefix = "user#"
	uidCounterKey = "counter#uid"
)
