package dynamostore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/session"
)

// CreateSession stores a new session with Version 1; ErrExists if the id is
// taken.
func (s *Store) CreateSession(ctx context.Context, sess session.Session) (session.Session, error) {
	if sess.ID == "" {
		return session.Session{}, errors.New("create session: empty id")
	}
	sess.Version = 1
	item, err := marshalSession(sess)
	if err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	if err := s.putNew(ctx, s.t.Sessions, item); err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	return sess, nil
}

// GetSession returns the session with the given id; ErrNotFound if none.
func (s *Store) GetSession(ctx context.Context, id string) (session.Session, error) {
	sess, err := s.getSession(ctx, id)
	if err != nil {
		return session.Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return sess, nil
}

func (s *Store) getSession(ctx context.Context, id string) (session.Session, error) {
	if id == "" {
		return session.Session{}, session.ErrNotFound
	}
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.t.Sessions),
		Key:            key(id),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return session.Session{}, err
	}
	if out.Item == nil {
		return session.Session{}, session.ErrNotFound
	}
	return unmarshalSession(out.Item)
}

// UpdateSession writes sess if the stored Version equals sess.Version and
// returns it with the Version increased; ErrConflict if another write came
// first, ErrNotFound if the session is gone.
func (s *Store) UpdateSession(ctx context.Context, sess session.Session) (session.Session, error) {
	if sess.ID == "" {
		return session.Session{}, fmt.Errorf("update session: %w", session.ErrNotFound)
	}
	read := sess.Version
	sess.Version++
	item, err := marshalSession(sess)
	if err != nil {
		return session.Session{}, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	if err := s.putIfVersion(ctx, s.t.Sessions, item, read); err != nil {
		return session.Session{}, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	return sess, nil
}

// DeleteSession removes a session if its stored Version is still version;
// ErrConflict if it changed, ErrNotFound if it is gone.
func (s *Store) DeleteSession(ctx context.Context, id string, version int64) error {
	if id == "" {
		return fmt.Errorf("delete session: %w", session.ErrNotFound)
	}
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                           aws.String(s.t.Sessions),
		Key:                                 key(id),
		ConditionExpression:                 aws.String(versionIs),
		ExpressionAttributeNames:            map[string]string{"#version": attrVersion},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":v": num(version)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if cerr := conditionFailed(err, version); cerr != nil {
		return fmt.Errorf("delete session %s: %w", id, cerr)
	}
	if err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// ListSessions returns every session, oldest first (by CreatedAt, then
// id). It scans the table with consistent reads.
func (s *Store) ListSessions(ctx context.Context) ([]session.Session, error) {
	out, err := scanAll(ctx, s, s.t.Sessions, unmarshalSession)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	slices.SortFunc(out, compareCreation)
	return out, nil
}

// compareCreation orders sessions by CreatedAt, then by id. (The embedded
// store breaks ties by creation order; DynamoDB keeps no such order, and
// sessions of one user created in the same nanosecond do not happen
// outside tests.)
func compareCreation(a, b session.Session) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// SessionOfUser returns the user's newest session (latest CreatedAt, then
// highest id); ErrNotFound if the user has none. It finds the user's
// sessions through the byUser index and reads the newest again by key, so
// the answer carries the current version.
func (s *Store) SessionOfUser(ctx context.Context, userID string) (session.Session, error) {
	if userID == "" {
		return session.Session{}, fmt.Errorf("find session of user: %w", session.ErrNotFound)
	}
	var found []session.Session
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(s.t.Sessions),
		IndexName:                 aws.String(IndexByUser),
		KeyConditionExpression:    aws.String("#user = :user"),
		ExpressionAttributeNames:  map[string]string{"#user": attrUserID},
		ExpressionAttributeValues: map[string]types.AttributeValue{":user": str(userID)},
		ScanIndexForward:          aws.Bool(false),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return session.Session{}, fmt.Errorf("find session of user %s: %w", userID, err)
		}
		for _, item := range page.Items {
			sess, err := unmarshalSession(item)
			if err != nil {
				return session.Session{}, fmt.Errorf("find session of user %s: %w", userID, err)
			}
			found = append(found, sess)
		}
	}
	slices.SortFunc(found, func(a, b session.Session) int { return compareCreation(b, a) })

	// The index may still list a session deleted an instant ago: take the
	// newest that is still there.
	for _, cand := range found {
		sess, err := s.getSession(ctx, cand.ID)
		if errors.Is(err, session.ErrNotFound) {
			continue
		}
		if err != nil {
			return session.Session{}, fmt.Errorf("find session of user %s: %w", userID, err)
		}
		return sess, nil
	}
	return session.Session{}, fmt.Errorf("find session of user %s: %w", userID, session.ErrNotFound)
}
