// Package dynamostore is the session store of AI Shell in AWS: sessions,
// warm tasks, users' POSIX ids and relay records in four DynamoDB tables.
// It implements session.Store with the same semantics as the embedded
// store of one machine (shared/localstore): versions start at 1 and rise by
// one on every write, writes are conditional on the version the writer
// read, and two claimers never get the same warm task.
//
// # Tables
//
// CreateTables makes them for tests and local runs; the CDK stack declares
// the same. All four are on-demand (PAY_PER_REQUEST); every key attribute
// is a string (S); both indexes project ALL attributes.
//
//	Sessions   partition key id
//	           GSI byUser: partition key userId, sort key createdAt
//	WarmTasks  partition key id
//	           GSI byRelay: partition key relayId, sort key startedAt
//	           TTL attribute expiresAt
//	Users      partition key userId
//	Relays     partition key id
//	           TTL attribute expiresAt
//
// The Users table holds one item per user, keyed "user#" followed by the
// user's id, and one counter item keyed "counter#uid" whose attribute next
// counts the uids handed out. The prefixes keep any user id, whatever its
// characters, from naming the counter.
//
// # Attributes
//
// Records are written with attributevalue from this package's item types.
// Times are strings in UTC, RFC 3339 with exactly nine fractional digits
// (2026-02-08T12:00:00.000000000Z): string order is time order, which the
// sort keys of the indexes need, and a time read back equals the one
// written to the nanosecond (in UTC). An unset time is left out, except
// createdAt and startedAt, which are always written so that every record
// appears in its index. expiresAt is a number, seconds since the epoch, as
// DynamoDB's TTL wants.
//
// # Consistency
//
// Reads by key and scans are strongly consistent. Queries of an index are
// not (DynamoDB offers no consistent read there), so what matters is read
// again by key or written conditionally: ListWarmTasks re-reads the tasks it
// found with a consistent BatchGetItem, SessionOfUser re-reads the session
// it picked, and ClaimWarmTask's write is conditional on the task being
// available at that moment. A record written an instant earlier may still
// be missing from an index: a warm task that just became available may be
// passed over (the start falls back to a cold one).
//
// # Expiry
//
// Warm task records expire WarmTaskTTL after their StartedAt, relay records
// RelayTTL after their HeartbeatAt. TTL is a backstop only: DynamoDB deletes
// expired items lazily (moto never does), so the refill still recycles old
// warm tasks and expires stale claims itself, and readers of relay records
// judge a relay by its heartbeat, not by the record being there.
package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/session"
)

// FirstUID is the POSIX uid given to the first user; later users get higher
// ones, and a uid is never handed out twice (R9a).
const FirstUID = 100000

// Expiry of records through DynamoDB's TTL (a backstop; see the package
// comment).
const (
	// WarmTaskTTL is how long after its StartedAt a warm task record may be
	// deleted by TTL. It is far past the refill's maximum age.
	WarmTaskTTL = 2 * time.Hour
	// RelayTTL is how long after its last heartbeat a relay record may be
	// deleted by TTL.
	RelayTTL = 5 * time.Minute
)

// Names of the global secondary indexes.
const (
	// IndexByUser indexes Sessions by userId, sorted by createdAt.
	IndexByUser = "byUser"
	// IndexByRelay indexes WarmTasks by relayId, sorted by startedAt.
	IndexByRelay = "byRelay"
)

// Tables names the four tables of an environment.
type Tables struct {
	Sessions  string
	WarmTasks string
	Users     string
	Relays    string
}

// TablesFromEnv reads the table names from SESSIONS_TABLE, WARM_TASKS_TABLE,
// USERS_TABLE and RELAYS_TABLE; the error names every one that is unset.
func TablesFromEnv() (Tables, error) {
	t := Tables{
		Sessions:  os.Getenv("SESSIONS_TABLE"),
		WarmTasks: os.Getenv("WARM_TASKS_TABLE"),
		Users:     os.Getenv("USERS_TABLE"),
		Relays:    os.Getenv("RELAYS_TABLE"),
	}
	var missing []string
	for _, v := range []struct{ name, val string }{
		{"SESSIONS_TABLE", t.Sessions},
		{"WARM_TASKS_TABLE", t.WarmTasks},
		{"USERS_TABLE", t.Users},
		{"RELAYS_TABLE", t.Relays},
	} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return Tables{}, fmt.Errorf("table names: %s not set", strings.Join(missing, ", "))
	}
	return t, nil
}

// Store is a session.Store on DynamoDB. It is safe for concurrent use, by
// any number of processes sharing the tables.
type Store struct {
	db *dynamodb.Client
	t  Tables
}

// New returns a store on the given tables.
func New(c *dynamodb.Client, t Tables) *Store {
	return &Store{db: c, t: t}
}

var _ session.Store = (*Store)(nil)

// conditionFailed maps a failed condition on an existing record's version
// to session.ErrConflict, or to session.ErrNotFound when the record was
// missing (the write asked for ALL_OLD, so an existing record comes back
// with the exception). It returns nil for any other error.
func conditionFailed(err error, version int64) error {
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		return nil
	}
	if len(ccf.Item) == 0 {
		return session.ErrNotFound
	}
	var stored int64
	if v, ok := ccf.Item[attrVersion].(*types.AttributeValueMemberN); ok {
		fmt.Sscan(v.Value, &stored)
	}
	return fmt.Errorf("version %d, stored %d: %w", version, stored, session.ErrConflict)
}

// isConditionFailed reports whether err is a failed condition.
func isConditionFailed(err error) bool {
	var ccf *types.ConditionalCheckFailedException
	return errors.As(err, &ccf)
}

// Attribute names used in expressions.
const (
	attrID        = "id"
	attrUserID    = "userId"
	attrRelayID   = "relayId"
	attrState     = "state"
	attrSessionID = "sessionId"
	attrClaimedAt = "claimedAt"
	attrVersion   = "version"
	attrCreatedAt = "createdAt"
	attrStartedAt = "startedAt"
	attrExpiresAt = "expiresAt"
	attrNext      = "next"
)

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}
}

func key(id string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrID: str(id)}
}

// Conditions of writes.
const (
	// notExists: no record with this key yet (a create).
	notExists = "attribute_not_exists(#id)"
	// versionIs: the record is still at the version the writer read (:v).
	versionIs = "#version = :v"
)

// putNew writes a new item; session.ErrExists if its id is taken.
func (s *Store) putNew(ctx context.Context, table string, item map[string]types.AttributeValue) error {
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(table),
		Item:                     item,
		ConditionExpression:      aws.String(notExists),
		ExpressionAttributeNames: map[string]string{"#id": attrID},
	})
	if isConditionFailed(err) {
		return session.ErrExists
	}
	return err
}

// putIfVersion replaces an item if its stored version is still read;
// session.ErrConflict if another write came first, ErrNotFound if the item
// is gone.
func (s *Store) putIfVersion(ctx context.Context, table string, item map[string]types.AttributeValue, read int64) error {
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(table),
		Item:                                item,
		ConditionExpression:                 aws.String(versionIs),
		ExpressionAttributeNames:            map[string]string{"#version": attrVersion},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":v": num(read)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if cerr := conditionFailed(err, read); cerr != nil {
		return cerr
	}
	return err
}

// scanAll reads every item of a table with consistent reads, page by
// page, and decodes each.
func scanAll[T any](ctx context.Context, s *Store, table string,
	decode func(map[string]types.AttributeValue) (T, error)) ([]T, error) {
	out := []T{}
	p := dynamodb.NewScanPaginator(s.db, &dynamodb.ScanInput{
		TableName:      aws.String(table),
		ConsistentRead: aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, item := range page.Items {
			v, err := decode(item)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
	}
	return out, nil
}
