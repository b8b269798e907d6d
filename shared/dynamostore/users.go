package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// UserUID returns the POSIX uid of a user, allocating the next one (from
// FirstUID upwards) on first use. A uid is never handed out twice: it comes
// from an atomic counter, and the user's record is created only if it does
// not exist yet. Of two first calls for one user, the one whose record
// lands second takes the other's uid; the counter value it drew stays
// unused.
func (s *Store) UserUID(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, errors.New("allocate uid: empty user id")
	}
	uid, found, err := s.readUID(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("allocate uid of %s: read user: %w", userID, err)
	}
	if found {
		return uid, nil
	}

	uid, err = s.nextUID(ctx)
	if err != nil {
		return 0, fmt.Errorf("allocate uid of %s: draw uid: %w", userID, err)
	}
	item, err := attributevalue.MarshalMap(userItem{
		Key: userKeyPrefix + userID, UserID: userID, UID: uid,
	})
	if err != nil {
		return 0, fmt.Errorf("allocate uid of %s: encode user: %w", userID, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(s.t.Users),
		Item:                     item,
		ConditionExpression:      aws.String("attribute_not_exists(#key)"),
		ExpressionAttributeNames: map[string]string{"#key": attrUserID},
	})
	if isConditionFailed(err) {
		uid, found, err = s.readUID(ctx, userID)
		if err == nil && !found {
			err = errors.New("user record vanished")
		}
		if err != nil {
			return 0, fmt.Errorf("allocate uid of %s: read user after a concurrent first use: %w",
				userID, err)
		}
		return uid, nil
	}
	if err != nil {
		return 0, fmt.Errorf("allocate uid of %s: write user: %w", userID, err)
	}
	return uid, nil
}

// readUID reads a user's record.
func (s *Store) readUID(ctx context.Context, userID string) (uid int, found bool, err error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.t.Users),
		Key: map[string]types.AttributeValue{
			attrUserID: str(userKeyPrefix + userID),
		},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return 0, false, err
	}
	if out.Item == nil {
		return 0, false, nil
	}
	var item userItem
	if err := attributevalue.UnmarshalMap(out.Item, &item); err != nil {
		return 0, false, fmt.Errorf("decode user: %w", err)
	}
	return item.UID, true, nil
}

// nextUID draws the next uid from the counter item: one atomic ADD that
// returns the new count.
func (s *Store) nextUID(ctx context.Context) (int, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.t.Users),
		Key:                       map[string]types.AttributeValue{attrUserID: str(uidCounterKey)},
		UpdateExpression:          aws.String("ADD #next :one"),
		ExpressionAttributeNames:  map[string]string{"#next": attrNext},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": num(1)},
		ReturnValues:              types.ReturnValueUpdatedNew,
	})
	if err != nil {
		return 0, err
	}
	n, ok := out.Attributes[attrNext].(*types.AttributeValueMemberN)
	if !ok {
		return 0, errors.New("counter answer without its count")
	}
	count, err := strconv.Atoi(n.Value)
	if err != nil || count < 1 {
		return 0, fmt.Errorf("counter answer %q is not a positive count", n.Value)
	}
	return FirstUID + count - 1, nil
}
