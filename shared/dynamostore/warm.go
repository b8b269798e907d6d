package dynamostore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/session"
)

// PutWarmTask stores a new warm task with Version 1; ErrExists if the id is
// taken.
func (s *Store) PutWarmTask(ctx context.Context, w session.WarmTask) (session.WarmTask, error) {
	if w.ID == "" {
		return session.WarmTask{}, errors.New("put warm task: empty id")
	}
	w.Version = 1
	item, err := marshalWarm(w)
	if err != nil {
		return session.WarmTask{}, fmt.Errorf("put warm task %s: %w", w.ID, err)
	}
	if err := s.putNew(ctx, s.t.WarmTasks, item); err != nil {
		return session.WarmTask{}, fmt.Errorf("put warm task %s: %w", w.ID, err)
	}
	return w, nil
}

// UpdateWarmTask writes w if the stored Version equals w.Version and returns
// it with the Version increased; ErrConflict if another write came first,
// ErrNotFound if the record is gone.
func (s *Store) UpdateWarmTask(ctx context.Context, w session.WarmTask) (session.WarmTask, error) {
	if w.ID == "" {
		return session.WarmTask{}, fmt.Errorf("update warm task: %w", session.ErrNotFound)
	}
	read := w.Version
	w.Version++
	item, err := marshalWarm(w)
	if err != nil {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: %w", w.ID, err)
	}
	if err := s.putIfVersion(ctx, s.t.WarmTasks, item, read); err != nil {
		return session.WarmTask{}, fmt.Errorf("update warm task %s: %w", w.ID, err)
	}
	return w, nil
}

// ClaimWarmTask turns the oldest available warm task of relayID (earliest
// StartedAt, then lowest id) into a claim for sessionID at now;
// ErrNoWarmTask if the relay has none.
//
// The candidates come from the byRelay index, which may lag. The claim
// itself is one UpdateItem conditional on the task being available and of
// this relay at that moment, which raises the version in the same write:
// of two claimers one wins and the other moves on to the next candidate,
// and a writer holding the version read before the claim gets ErrConflict.
// The condition is on the state rather than on the version the index
// showed, so a lagging index costs no lost claim.
func (s *Store) ClaimWarmTask(
	ctx context.Context, relayID, sessionID string, now time.Time,
) (session.WarmTask, error) {
	cands, err := s.queryWarm(ctx, relayID, true)
	if err != nil {
		return session.WarmTask{}, fmt.Errorf("claim warm task of relay %s: %w", relayID, err)
	}
	for _, cand := range cands {
		w, err := s.claim(ctx, cand.ID, relayID, sessionID, now)
		if isConditionFailed(err) {
			continue
		}
		if err != nil {
			return session.WarmTask{}, fmt.Errorf("claim warm task %s: %w", cand.ID, err)
		}
		return w, nil
	}
	return session.WarmTask{}, fmt.Errorf("claim warm task of relay %s: %w",
		relayID, session.ErrNoWarmTask)
}

// claim makes one conditional claim of a warm task.
func (s *Store) claim(
	ctx context.Context, id, relayID, sessionID string, now time.Time,
) (session.WarmTask, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.t.WarmTasks),
		Key:       key(id),
		UpdateExpression: aws.String("SET #state = :claimed, #session = :session, " +
			"#claimedAt = :at, #version = #version + :one"),
		ConditionExpression: aws.String("#state = :available AND #relay = :relay"),
		ExpressionAttributeNames: map[string]string{
			"#state": attrState, "#relay": attrRelayID, "#session": attrSessionID,
			"#claimedAt": attrClaimedAt, "#version": attrVersion,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":available": str(string(session.WarmAvailable)),
			":claimed":   str(string(session.WarmClaimed)),
			":relay":     str(relayID),
			":session":   str(sessionID),
			":at":        str(stamp(now)),
			":one":       num(1),
		},
		ReturnValues: types.ReturnValueAllNew,
	})
	if err != nil {
		return session.WarmTask{}, err
	}
	return unmarshalWarm(out.Attributes)
}

// queryWarm returns the warm tasks of a relay that the byRelay index lists,
// oldest first; only the available ones if available is set.
func (s *Store) queryWarm(
	ctx context.Context, relayID string, available bool,
) ([]session.WarmTask, error) {
	out := []session.WarmTask{}
	if relayID == "" {
		return out, nil
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.t.WarmTasks),
		IndexName:                 aws.String(IndexByRelay),
		KeyConditionExpression:    aws.String("#relay = :relay"),
		ExpressionAttributeNames:  map[string]string{"#relay": attrRelayID},
		ExpressionAttributeValues: map[string]types.AttributeValue{":relay": str(relayID)},
	}
	if available {
		in.FilterExpression = aws.String("#state = :available")
		in.ExpressionAttributeNames["#state"] = attrState
		in.ExpressionAttributeValues[":available"] = str(string(session.WarmAvailable))
	}
	p := dynamodb.NewQueryPaginator(s.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("query warm tasks: %w", err)
		}
		for _, item := range page.Items {
			w, err := unmarshalWarm(item)
			if err != nil {
				return nil, fmt.Errorf("query warm tasks: %w", err)
			}
			out = append(out, w)
		}
	}
	slices.SortFunc(out, compareAge)
	return out, nil
}

// compareAge orders warm tasks by StartedAt, then by id.
func compareAge(a, b session.WarmTask) int {
	if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// DeleteWarmTask removes a warm task record; no error if it is gone.
func (s *Store) DeleteWarmTask(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.t.WarmTasks),
		Key:       key(id),
	})
	if err != nil {
		return fmt.Errorf("delete warm task %s: %w", id, err)
	}
	return nil
}

// batchGetMax is the most keys one BatchGetItem takes.
const batchGetMax = 100

// ListWarmTasks returns the warm tasks of relayID, oldest first. It finds
// them through the byRelay index and reads them again by key with
// consistent reads, so every record is current and one deleted meanwhile is
// left out.
func (s *Store) ListWarmTasks(ctx context.Context, relayID string) ([]session.WarmTask, error) {
	listed, err := s.queryWarm(ctx, relayID, false)
	if err != nil {
		return nil, fmt.Errorf("list warm tasks of relay %s: %w", relayID, err)
	}

	out := []session.WarmTask{}
	for chunk := range slices.Chunk(listed, batchGetMax) {
		keys := make([]map[string]types.AttributeValue, len(chunk))
		for i, w := range chunk {
			keys[i] = key(w.ID)
		}
		items, err := s.batchGet(ctx, s.t.WarmTasks, keys)
		if err != nil {
			return nil, fmt.Errorf("list warm tasks of relay %s: %w", relayID, err)
		}
		for _, item := range items {
			w, err := unmarshalWarm(item)
			if err != nil {
				return nil, fmt.Errorf("list warm tasks of relay %s: %w", relayID, err)
			}
			// A record moved to another relay since the index listed it is
			// no longer this relay's.
			if w.RelayID == relayID {
				out = append(out, w)
			}
		}
	}
	slices.SortFunc(out, compareAge)
	return out, nil
}

// batchGet reads up to batchGetMax items of one table with consistent
// reads, asking again for the keys DynamoDB left unprocessed.
func (s *Store) batchGet(
	ctx context.Context, table string, keys []map[string]types.AttributeValue,
) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	req := map[string]types.KeysAndAttributes{
		table: {Keys: keys, ConsistentRead: aws.Bool(true)},
	}
	for attempt := 0; len(req) > 0; attempt++ {
		if attempt > 0 {
			// Unprocessed keys mean the table is throttling: back off.
			if err := pause(ctx, attempt); err != nil {
				return nil, err
			}
		}
		out, err := s.db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
		if err != nil {
			return nil, fmt.Errorf("batch get: %w", err)
		}
		items = append(items, out.Responses[table]...)
		req = out.UnprocessedKeys
	}
	return items, nil
}

// pause waits before the attempt-th retry of unprocessed keys: 50 ms,
// doubling, at most 1 s; it returns early with ctx's error.
func pause(ctx context.Context, attempt int) error {
	d := min(50*time.Millisecond<<min(attempt-1, 5), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
