package dynamostore

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// tableWait bounds the wait for a new table to become active.
const tableWait = 2 * time.Minute

// CreateTables creates the four tables with the keys, indexes and TTL
// attributes of the package comment, on-demand, and waits until they are
// active. It is for tests and local runs; in AWS the CDK stack creates the
// same tables. A table that already exists is an error
// (ResourceInUseException).
func CreateTables(ctx context.Context, c *dynamodb.Client, t Tables) error {
	defs := []struct {
		name, partition string
		index           *index
		ttl             bool
	}{
		{t.Sessions, attrID, &index{IndexByUser, attrUserID, attrCreatedAt}, false},
		{t.WarmTasks, attrID, &index{IndexByRelay, attrRelayID, attrStartedAt}, true},
		{t.Users, attrUserID, nil, false},
		{t.Relays, attrID, nil, true},
	}
	for _, d := range defs {
		if err := createTable(ctx, c, d.name, d.partition, d.index, d.ttl); err != nil {
			return fmt.Errorf("create table %s: %w", d.name, err)
		}
	}
	return nil
}

// index is a global secondary index with a string partition and sort key.
type index struct {
	name, partition, sort string
}

func createTable(
	ctx context.Context, c *dynamodb.Client, name, partition string, gsi *index, ttl bool,
) error {
	in := &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(partition), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(partition), KeyType: types.KeyTypeHash},
		},
	}
	if gsi != nil {
		for _, a := range []string{gsi.partition, gsi.sort} {
			in.AttributeDefinitions = append(in.AttributeDefinitions, types.AttributeDefinition{
				AttributeName: aws.String(a), AttributeType: types.ScalarAttributeTypeS,
			})
		}
		in.GlobalSecondaryIndexes = []types.GlobalSecondaryIndex{{
			IndexName: aws.String(gsi.name),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(gsi.partition), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(gsi.sort), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}}
	}
	if _, err := c.CreateTable(ctx, in); err != nil {
		return err
	}

	w := dynamodb.NewTableExistsWaiter(c, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = time.Second
		o.MaxDelay = 5 * time.Second
	})
	err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, tableWait)
	if err != nil {
		return fmt.Errorf("wait until active: %w", err)
	}

	if ttl {
		_, err := c.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
			TableName: aws.String(name),
			TimeToLiveSpecification: &types.TimeToLiveSpecification{
				AttributeName: aws.String(attrExpiresAt),
				Enabled:       aws.Bool(true),
			},
		})
		if err != nil {
			return fmt.Errorf("turn on TTL: %w", err)
		}
	}
	return nil
}
