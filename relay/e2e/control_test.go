package e2e

import (
	"github.com/aws/aws-lambda-go/events"

	"context"
	"net/http"
	"testing"
	"time"

	"github.com/aishell/aishell/relay/wire"
	"github.com/aishell/aishell/shared/relayclient"
	"github.com/aishell/aishell/shared/session"
	"github.com/aishell/aishell/shared/sessionapi"
	"github.com/aishell/aishell/shared/ticket"
)

// A control plane in another process (the session Lambda in AWS) reaches
// the owning relay through its control API: a warm claim is handed its
// user, and an ended session closes its client, as on one machine.
func TestControlPlaneReachesTheRelay(t *testing.T) {
	p := startProduct(t, options{warm: 1, control: true})
	ctx := context.Background()
	if err := p.Store.PutRelay(ctx, session.Relay{
		ID: "relay-local", ClientURL: "ws" + p.URL[len("http"):] + "/ws",
		TaskURL: "ws" + p.URL[len("http"):], ControlURL: p.URL, HeartbeatAt: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "a warm task available", func() bool {
		return countWarm(t, p.Store, session.WarmAvailable) == 1
	})

	tickets, taskKeys := ticket.NewKeyring(p.Keys.Ticket), ticket.NewKeyring(p.Keys.Task)
	rc := relayclient.New(p.Store, taskKeys, nil, nil)
	lambda := session.NewService(session.Config{AssignRelays: true, WarmPool: true}, session.Deps{
		Store: p.Store, Runner: p.Runner, Warm: rc, Notifier: rc, Tickets: tickets, TaskKeys: taskKeys,
	})
	api := &sessionapi.Handler{Svc: lambda}

	v, err := lambda.Create(ctx, session.Request{}, "olga")
	if err != nil {
		t.Fatalf("create through the control plane: %v", err)
	}
	if !v.Session.Warm || v.RelayURL == "" {
		t.Fatalf("session %+v relay %q; want a warm claim and the relay's URL", v.Session, v.RelayURL)
	}
	c := dial(t, sessionapi.SessionObject{RelayURL: v.RelayURL, Ticket: v.Ticket})
	if ready := c.waitReady(wait); !ready.Warm {
		t.Errorf("session_ready warm %v; want true", ready.Warm)
	}
	c.input("echo remote-$((4*4))\r")
	c.waitOutput("remote-16", wait)

	req := request(http.MethodDelete, "/sessions/"+v.Session.ID, "olga")
	if resp, _ := api.Handle(ctx, req); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.StatusCode, resp.Body)
	}
	c.waitError(wire.CodeSessionEnded, wait)

	// A forged control token is refused.
	forged := relayclient.New(p.Store, ticket.NewKeyring(ticket.NewKey()), nil, nil)
	v2, err := lambda.Create(ctx, session.Request{}, "olga")
	if err != nil {
		t.Fatal(err)
	}
	if err := forged.InitUser(ctx, session.InitUser{TaskID: "t_x", SessionID: v2.Session.ID, UserID: "olga"}); err == nil {
		t.Errorf("init_user with a forged control token succeeded")
	}
}

// request is an API Gateway HTTP API event for the session handler, with
// the authorizer's claims of user.
func request(method, path, user string) events.APIGatewayV2HTTPRequest {
	req := events.APIGatewayV2HTTPRequest{RawPath: path}
	req.RequestContext.HTTP.Method = method
	req.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
		JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{Claims: map[string]string{"sub": user}},
	}
	return req
}
