package dynamostore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/aishell/aishell/shared/session"
)

// PutRelay creates or replaces a relay's record (its heartbeat). The record
// expires RelayTTL after r.HeartbeatAt unless a later heartbeat replaces it.
func (s *Store) PutRelay(ctx context.Context, r session.Relay) error {
	if r.ID == "" {
		return errors.New("put relay: empty id")
	}
	item, err := marshalRelay(r)
	if err != nil {
		return fmt.Errorf("put relay %s: %w", r.ID, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.t.Relays),
		Item:      item,
	})
	if err != nil {
		return fmt.Errorf("put relay %s: %w", r.ID, err)
	}
	return nil
}

// ListRelays returns every relay record, by id, including records past
// their TTL that DynamoDB has not deleted yet: callers judge a relay by
// its HeartbeatAt.
func (s *Store) ListRelays(ctx context.Context) ([]session.Relay, error) {
	out, err := scanAll(ctx, s, s.t.Relays, unmarshalRelay)
	if err != nil {
		return nil, fmt.Errorf("list relays: %w", err)
	}
	slices.SortFunc(out, func(a, b session.Relay) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteRelay removes a relay's record; no error if it is gone.
func (s *Store) DeleteRelay(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.t.Relays),
		Key:       key(id),
	})
	if err != nil {
		return fmt.Errorf("delete relay %s: %w", id, err)
	}
	return nil
}
