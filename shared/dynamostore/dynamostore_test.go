package dynamostore

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/aishell/aishell/shared/awsclient"
	"github.com/aishell/aishell/shared/awsops"
	"github.com/aishell/aishell/shared/awstest"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/session/storetest"
)

var (
	// admin creates and inspects tables; its calls are not recorded, as no
	// component of the product creates tables.
	admin *dynamodb.Client
	// client is the store's client; its calls are recorded as the relay's.
	client *dynamodb.Client
	rec    = awsops.NewRecorder()
	tables atomic.Int64
)

var t0 = time.Date(2026, 2, 8, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	moto, err := awstest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dynamostore tests need moto:", err)
		return 1
	}
	defer moto.Close()

	admin = dynamodb.NewFromConfig(serialized(moto.Config()))
	cfg := serialized(moto.Config())
	awsclient.Prepare(&cfg, awsops.Relay, rec)
	client = dynamodb.NewFromConfig(cfg)

	code := m.Run()
	if err := rec.Check(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "moto said:\n"+moto.Output())
	}
	return code
}

// serialized makes the clients of cfg send one request at a time.
//
// Moto gap: moto_server (5.2.1) answers requests on several threads and
// checks an UpdateItem's condition and applies the update without a lock,
// so two concurrent conditional updates of one item can both succeed (seen
// in about one run in ten with sixteen claimers). DynamoDB applies each
// write to an item atomically; serializing the requests restores that
// here while the store's callers still interleave between their calls.
func serialized(cfg aws.Config) aws.Config {
	cfg.HTTPClient = serialClient{next: cfg.HTTPClient}
	return cfg
}

// serialMu is shared by every serialClient, so that both clients' requests
// queue behind one another.
var serialMu sync.Mutex

type serialClient struct{ next aws.HTTPClient }

// Do sends r once no other request is under way. Moto answers only once
// the request is carried out, so the body may be read after the unlock.
func (c serialClient) Do(r *http.Request) (*http.Response, error) {
	serialMu.Lock()
	defer serialMu.Unlock()
	return c.next.Do(r)
}

// newTables creates a fresh set of tables for one test, so that tests need
// no reset of the server between them.
func newTables(t *testing.T) Tables {
	t.Helper()
	n := tables.Add(1)
	tb := Tables{
		Sessions:  fmt.Sprintf("t%d-sessions", n),
		WarmTasks: fmt.Sprintf("t%d-warm-tasks", n),
		Users:     fmt.Sprintf("t%d-users", n),
		Relays:    fmt.Sprintf("t%d-relays", n),
	}
	if err := CreateTables(context.Background(), admin, tb); err != nil {
		t.Fatalf("CreateTables: %v", err)
	}
	return tb
}

func open(t *testing.T) *Store {
	t.Helper()
	return New(client, newTables(t))
}

// The DynamoDB store keeps the contract of every session.Store.
func TestContract(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) session.Store { return open(t) },
		storetest.FirstUID(FirstUID),
		// DynamoDB keeps no order of creations: ties go to the higher id.
		storetest.SameInstantOrder(storetest.NewerByID),
		// Times are stored as UTC strings.
		storetest.TimesInUTC(),
	)
}

// Another process on the same tables agrees on old users and hands out no
// uid twice.
func TestUserUIDSharedByStores(t *testing.T) {
	ctx := context.Background()
	tb := newTables(t)
	s := New(client, tb)
	for _, user := range []string{"alice", "bob", "carol"} {
		if _, err := s.UserUID(ctx, user); err != nil {
			t.Fatalf("UserUID(%s): %v", user, err)
		}
	}

	other := New(client, tb)
	if got, _ := other.UserUID(ctx, "bob"); got != FirstUID+1 {
		t.Errorf("bob from another store: got %d; want %d", got, FirstUID+1)
	}
	if got, _ := other.UserUID(ctx, "dave"); got != FirstUID+3 {
		t.Errorf("dave from another store: got %d; want %d", got, FirstUID+3)
	}
}

// Warm task and relay records carry the expiry attribute DynamoDB's TTL
// reads: a number of seconds since the epoch.
func TestExpiryAttributes(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	// A fraction of a second, which the whole seconds of expiresAt drop.
	at := t0.Add(123456789 * time.Nanosecond)
	warm := session.WarmTask{ID: "t_1", RelayID: "r1", StartedAt: at}
	if _, err := s.PutWarmTask(ctx, warm); err != nil {
		t.Fatalf("PutWarmTask: %v", err)
	}
	relay := session.Relay{ID: "r1", HeartbeatAt: at}
	if err := s.PutRelay(ctx, relay); err != nil {
		t.Fatalf("PutRelay: %v", err)
	}

	tests := []struct {
		table, id string
		want      time.Time
	}{
		{s.t.WarmTasks, warm.ID, warm.StartedAt.Add(WarmTaskTTL)},
		{s.t.Relays, relay.ID, relay.HeartbeatAt.Add(RelayTTL)},
	}
	for _, tc := range tests {
		out, err := admin.GetItem(ctx, &dynamodb.GetItemInput{
			TableName: aws.String(tc.table), Key: key(tc.id),
		})
		if err != nil {
			t.Fatalf("GetItem %s: %v", tc.table, err)
		}
		n, ok := out.Item[attrExpiresAt].(*types.AttributeValueMemberN)
		if want := strconv.FormatInt(tc.want.Unix(), 10); !ok || n.Value != want {
			t.Errorf("%s expiresAt: got %v; want number %s", tc.table, out.Item[attrExpiresAt], want)
		}
	}
}

func TestStampOrderIsTimeOrder(t *testing.T) {
	times := []time.Time{
		{},
		t0,
		t0.Add(time.Nanosecond),
		t0.Add(500 * time.Millisecond),
		t0.Add(time.Second),
		t0.Add(time.Second + 10*time.Microsecond),
		t0.Add(time.Hour).In(time.FixedZone("UTC-5", -5*60*60)),
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for i := 1; i < len(times); i++ {
		a, b := keyStamp(times[i-1]), keyStamp(times[i])
		if a >= b {
			t.Errorf("stamps of %v and %v: got %q >= %q; want ascending", times[i-1], times[i], a, b)
		}
		if len(a) != len(b) {
			t.Errorf("stamps %q and %q: got lengths %d and %d; want equal", a, b, len(a), len(b))
		}
	}
}

func TestTablesFromEnv(t *testing.T) {
	all := map[string]string{
		"SESSIONS_TABLE": "s", "WARM_TASKS_TABLE": "w", "USERS_TABLE": "u", "RELAYS_TABLE": "r",
	}
	tests := []struct {
		name    string
		unset   []string
		want    Tables
		wantErr string
	}{
		{"all set", nil, Tables{Sessions: "s", WarmTasks: "w", Users: "u", Relays: "r"}, ""},
		{"one missing", []string{"USERS_TABLE"}, Tables{}, "USERS_TABLE not set"},
		{"two missing", []string{"SESSIONS_TABLE", "RELAYS_TABLE"}, Tables{},
			"SESSIONS_TABLE, RELAYS_TABLE not set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range all {
				if slices.Contains(tc.unset, k) {
					v = ""
				}
				t.Setenv(k, v)
			}
			got, err := TablesFromEnv()
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if (tc.wantErr == "") != (err == nil) || !strings.Contains(gotErr, tc.wantErr) {
				t.Errorf("error: got %v; want %q", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

// The tables are made exactly as the package comment (and the CDK stack)
// declares them.
func TestCreateTablesSchema(t *testing.T) {
	ctx := context.Background()
	tb := newTables(t)
	type gsi struct{ name, partition, sort, projection string }
	tests := []struct {
		table     string
		partition string
		index     *gsi
		ttl       bool
	}{
		{tb.Sessions, "id", &gsi{"byUser", "userId", "createdAt", "ALL"}, false},
		{tb.WarmTasks, "id", &gsi{"byRelay", "relayId", "startedAt", "ALL"}, true},
		{tb.Users, "userId", nil, false},
		{tb.Relays, "id", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.table, func(t *testing.T) {
			name := aws.String(tc.table)
			out, err := admin.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: name})
			if err != nil {
				t.Fatalf("DescribeTable: %v", err)
			}
			d := out.Table
			if b := d.BillingModeSummary; b == nil || b.BillingMode != types.BillingModePayPerRequest {
				t.Errorf("billing mode: got %+v; want PAY_PER_REQUEST", d.BillingModeSummary)
			}
			if got := keys(d.KeySchema); got != tc.partition {
				t.Errorf("key schema: got %s; want %s", got, tc.partition)
			}
			for _, a := range d.AttributeDefinitions {
				if a.AttributeType != types.ScalarAttributeTypeS {
					t.Errorf("attribute %s: got type %s; want S", *a.AttributeName, a.AttributeType)
				}
			}
			var got []gsi
			for _, g := range d.GlobalSecondaryIndexes {
				got = append(got, gsi{*g.IndexName, keys(g.KeySchema[:1]), keys(g.KeySchema[1:]),
					string(g.Projection.ProjectionType)})
			}
			var want []gsi
			if tc.index != nil {
				want = []gsi{*tc.index}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("indexes: got %+v; want %+v", got, want)
			}

			ttl, err := admin.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: name})
			if err != nil {
				t.Fatalf("DescribeTimeToLive: %v", err)
			}
			d2 := ttl.TimeToLiveDescription
			on := d2 != nil && d2.TimeToLiveStatus == types.TimeToLiveStatusEnabled
			if on != tc.ttl || on && aws.ToString(d2.AttributeName) != "expiresAt" {
				t.Errorf("TTL: got %+v; want on=%v on expiresAt", d2, tc.ttl)
			}
		})
	}
	if err := CreateTables(ctx, admin, tb); err == nil {
		t.Errorf("CreateTables again: got nil error; want ResourceInUseException")
	}
}

// keys writes a key schema as "partition" or "partition,sort".
func keys(ks []types.KeySchemaElement) string {
	var names []string
	for _, k := range ks {
		names = append(names, aws.ToString(k.AttributeName))
	}
	return strings.Join(names, ",")
}

// AWS errors reach the caller wrapped with the step and keep their code.
func TestAWSErrorsKeepTheirCode(t *testing.T) {
	ctx := context.Background()
	s := New(client, Tables{
		Sessions: "no-such", WarmTasks: "no-such", Users: "no-such", Relays: "no-such",
	})
	tests := []struct {
		name string
		do   func() error
		step string
	}{
		{"get session", func() error { _, err := s.GetSession(ctx, "s_1"); return err },
			"get session s_1"},
		{"claim", func() error { _, err := s.ClaimWarmTask(ctx, "r1", "s_1", t0); return err },
			"claim warm task of relay r1"},
		{"uid", func() error { _, err := s.UserUID(ctx, "alice"); return err }, "allocate uid of alice"},
		{"relays", func() error { _, err := s.ListRelays(ctx); return err }, "list relays"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if code := session.ErrorCode(err); code != "ResourceNotFoundException" {
				t.Errorf("code: got %q (%v); want ResourceNotFoundException", code, err)
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.step) {
				t.Errorf("error: got %v; want it to start with %q", err, tc.step)
			}
		})
	}
}
