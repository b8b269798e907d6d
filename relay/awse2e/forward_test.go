package awse2e

import (
	"testing"

	"github.com/aishell/aishell/shared/sessionapi"
)

// Several relays behind one address: a client that lands on a relay that
// does not own its session is forwarded to the one that does, and works as
// if it had reached it.
func TestClientOnAnotherRelayIsForwardedToTheOwner(t *testing.T) {
	p := newProduct(t, options{})
	a := p.startRelay("a", 0)
	b := p.startRelay("b", 0)

	s := p.create("quinn")
	owner, other := a, b
	if p.session(s.SessionID).RelayID == b.id {
		owner, other = b, a
	}
	if s.RelayURL != owner.clientURL {
		t.Fatalf("session object names %s; want its owner %s", s.RelayURL, owner.clientURL)
	}

	// The load balancer brought the client to the other relay.
	c := dial(t, sessionapi.SessionObject{SessionID: s.SessionID, RelayURL: other.clientURL, Ticket: s.Ticket})
	c.ready()
	c.input("echo forwarded-$((3*5))\r")
	c.sees("forwarded-15")
	if info := sessionInfo(owner, s.SessionID); !info.Client {
		t.Errorf("the owner does not hold the client: %+v", info)
	}
	if info := sessionInfo(other, s.SessionID); info.ID != "" {
		t.Errorf("the other relay holds the session itself: %+v", info)
	}
}
