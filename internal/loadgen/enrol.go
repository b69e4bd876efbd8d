package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Credential names the credential an Authz target's Check carries.
type Credential string

const (
	// JWT: the access token the authz service issued at registration, as
	// "authorization: Bearer <token>". Check verifies it in memory.
	JWT Credential = "jwt"
	// APIKey: an API key of the user, as "x-api-key". Check verifies it
	// through its cache, so every request but the first is a cache hit.
	APIKey Credential = "apikey"
)

// Enrolment is a throwaway user of the authz service and its credentials.
// Token and APIKey are secrets: put them on the wire with Use, never in a
// log line or an error.
type Enrolment struct {
	Username, UserID string
	Token            string // JWT access token (TokenTTL, 15 minutes by default)
	APIKey           string
}

// Use returns o with e's credential c set and the other cleared.
func (e Enrolment) Use(o AuthzOptions, c Credential) (AuthzOptions, error) {
	o.Token, o.APIKey = "", ""
	switch c {
	case JWT:
		o.Token = e.Token
	case APIKey:
		o.APIKey = e.APIKey
	default:
		return o, fmt.Errorf("credential %q: must be %s or %s", c, JWT, APIKey)
	}
	return o, nil
}

// maxAnswer bounds the REST answers Enrol reads.
const maxAnswer = 1 << 20

// Enrol registers a throwaway user on the authz REST API at base (e.g.
// "http://127.0.0.1:8081") and creates an API key for it with the token it
// got: POST /api/v1/auth/register, then POST /api/v1/auth/api-keys. The
// username is "loadgen-" and 12 random hex digits, the email
// <username>@loadgen.invalid, the password random and forgotten. Each
// call adds a user and a key to the service's store; nothing removes them.
// Errors name the endpoint and the service's answer, never a credential.
// A nil client means http.DefaultClient; ctx bounds both calls.
func Enrol(ctx context.Context, client *http.Client, base string) (Enrolment, error) {
	if client == nil {
		client = http.DefaultClient
	}
	var rnd [22]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	name := "loadgen-" + hex.EncodeToString(rnd[:6])
	base = strings.TrimRight(base, "/")

	var reg struct {
		UserID string `json:"userId"`
		Token  string `json:"token"`
	}
	err := postJSON(ctx, client, base+"/api/v1/auth/register", "", map[string]string{
		"username": name, "email": name + "@loadgen.invalid", "password": hex.EncodeToString(rnd[6:]),
	}, &reg)
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	if reg.UserID == "" || reg.Token == "" {
		return Enrolment{}, errors.New("enrol: register answered without userId or token")
	}

	var key struct {
		APIKey string `json:"apiKey"`
	}
	err = postJSON(ctx, client, base+"/api/v1/auth/api-keys", reg.Token, map[string]string{
		"userId": reg.UserID, "name": "loadgen",
	}, &key)
	if err != nil {
		return Enrolment{}, fmt.Errorf("enrol: %w", err)
	}
	if key.APIKey == "" {
		return Enrolment{}, errors.New("enrol: api-keys answered without apiKey")
	}
	return Enrolment{Username: name, UserID: reg.UserID, Token: reg.Token, APIKey: key.APIKey}, nil
}

// postJSON posts in as JSON to url, with "authorization: Bearer <token>"
// when token is set, and decodes a 201 answer into out. Another status is
// an error naming it and the service's {"error", "message"}.
func postJSON(ctx context.Context, client *http.Client, url, token string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	if token != "" {
		req.Header.Set("authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // *url.Error: method, URL and cause; the URL holds no credential
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusCreated {
		var problem struct{ Error, Message string }
		_ = json.Unmarshal(b, &problem)
		return fmt.Errorf("POST %s: %s (error %q, message %q)", url, resp.Status, problem.Error, problem.Message)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("POST %s: answer: %w", url, err)
	}
	return nil
}
