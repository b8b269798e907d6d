package ticket

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestKeyringSignVerify(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	old, cur := NewKey(), NewKey()
	ring := NewKeyring(cur, old)
	signedWithOld, _, err := NewKeyring(old).Sign(Claims{Kind: KindClient, UserID: "u", SessionID: "s"}, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	good, exp, err := ring.Sign(Claims{Kind: KindClient, UserID: "u", SessionID: "s", Resumed: true}, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(time.Minute); !exp.Equal(want) {
		t.Errorf("expiry %s; want %s", exp, want)
	}
	task, _, _ := ring.Sign(Claims{Kind: KindTask, TaskID: "t"}, now, time.Minute)
	tampered := good[:len(good)-2] + "AA"

	tests := []struct {
		name    string
		token   string
		kind    string
		at      time.Time
		wantErr error
	}{
		{"valid", good, KindClient, now, nil},
		{"signed with an older key of the ring", signedWithOld, KindClient, now, nil},
		{"one second before expiry", good, KindClient, now.Add(59 * time.Second), nil},
		{"at expiry", good, KindClient, now.Add(time.Minute), ErrExpired},
		{"tampered signature", tampered, KindClient, now, ErrInvalid},
		{"task credential used as a ticket", task, KindClient, now, ErrInvalid},
		{"empty", "", KindClient, now, ErrInvalid},
		{"not three parts", "v1.abc", KindClient, now, ErrInvalid},
		{"wrong version", strings.Replace(good, "v1.", "v2.", 1), KindClient, now, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ring.Verify(tt.token, tt.kind, tt.at)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v; want %v", err, tt.wantErr)
			}
			if err == nil && (c.UserID != "u" || c.SessionID != "s") {
				t.Errorf("claims %+v; want user u, session s", c)
			}
		})
	}
	if c, _ := ring.Verify(good, KindClient, now); !c.Resumed {
		t.Errorf("resumed flag lost")
	}
}

func TestRotationWithoutRestart(t *testing.T) {
	now := time.Now()
	a, b := NewKey(), NewKey()
	ring := NewKeyring(a)
	before, _, _ := ring.Sign(Claims{Kind: KindTask, TaskID: "t"}, now, time.Hour)
	ring.Set(b, a)
	after, _, _ := ring.Sign(Claims{Kind: KindTask, TaskID: "t"}, now, time.Hour)
	for name, tok := range map[string]string{"before": before, "after": after} {
		if _, err := ring.Verify(tok, KindTask, now); err != nil {
			t.Errorf("%s rotation: %v", name, err)
		}
	}
	ring.Set(b)
	if _, err := ring.Verify(before, KindTask, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("token of a retired key: err %v; want ErrInvalid", err)
	}
	if _, _, err := NewKeyring().Sign(Claims{Kind: KindTask}, now, time.Hour); err == nil {
		t.Errorf("signing with no key succeeded")
	}
}

func TestDevJWT(t *testing.T) {
	now := time.Now()
	key := NewKey()
	tok, err := SignDevJWT(key, "alice", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyDevJWT(key, tok, now)
	if err != nil || c.Sub != "alice" || c.Iss != DevIssuer {
		t.Fatalf("verify: %+v, %v; want sub alice", c, err)
	}
	parts := strings.Split(tok, ".")
	tests := []struct {
		name    string
		token   string
		at      time.Time
		wantErr error
	}{
		{"expired", tok, now.Add(2 * time.Hour), ErrExpired},
		{"other key", mustSign(t, NewKey(), "alice", now), now, ErrInvalid},
		{"alg none", "eyJhbGciOiJub25lIn0." + parts[1] + ".", now, ErrInvalid},
		{"garbage", "a.b.c", now, ErrInvalid},
		{"two parts", parts[0] + "." + parts[1], now, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyDevJWT(key, tt.token, tt.at); !errors.Is(err, tt.wantErr) {
				t.Errorf("err %v; want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := SignDevJWT(key, "", now, time.Hour); err == nil {
		t.Errorf("token for an empty user was signed")
	}
}

func mustSign(t *testing.T, key []byte, sub string, now time.Time) string {
	t.Helper()
	tok, err := SignDevJWT(key, sub, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
