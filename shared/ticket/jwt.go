package ticket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// DevIssuer is the issuer of development JWTs on one machine.
const DevIssuer = "aishell-local"

// JWTClaims are the claims of a JWT that the session API reads.
type JWTClaims struct {
	Sub string `json:"sub"`
	Iss string `json:"iss"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

// SignDevJWT returns an HS256 JWT for user sub, valid for ttl. It stands in
// for the identity provider's token on one machine only.
func SignDevJWT(key []byte, sub string, now time.Time, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", fmt.Errorf("sign dev token: empty user")
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload, err := json.Marshal(JWTClaims{Sub: sub, Iss: DevIssuer, Iat: now.Unix(), Exp: now.Add(ttl).Unix()})
	if err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	body := header + "." + base64.RawURLEncoding.EncodeToString(payload)
	h := hmac.New(sha256.New, key)
	h.Write([]byte(body))
	return body + "." + base64.RawURLEncoding.EncodeToString(h.Sum(nil)), nil
}

// VerifyDevJWT checks an HS256 JWT signed with key and returns its claims.
func VerifyDevJWT(key []byte, token string, now time.Time) (JWTClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return JWTClaims{}, fmt.Errorf("%w: not a JWT", ErrInvalid)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &header) != nil {
		return JWTClaims{}, fmt.Errorf("%w: malformed header", ErrInvalid)
	}
	if header.Alg != "HS256" {
		return JWTClaims{}, fmt.Errorf("%w: algorithm %q not accepted", ErrInvalid, header.Alg)
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte(parts[0] + "." + parts[1]))
	want := base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return JWTClaims{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return JWTClaims{}, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	var c JWTClaims
	if err := json.Unmarshal(pb, &c); err != nil {
		return JWTClaims{}, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	if c.Sub == "" {
		return JWTClaims{}, fmt.Errorf("%w: no sub claim", ErrInvalid)
	}
	if c.Exp != 0 && now.Unix() >= c.Exp {
		return c, fmt.Errorf("%w: token expired", ErrExpired)
	}
	return c, nil
}
