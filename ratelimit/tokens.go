package ratelimit

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/jwks"
	"github.com/leakytokens/leaky/internal/serve"
)

// maxTokensBody bounds a token API request body, in bytes.
const maxTokensBody = 1 << 20

// tokenAPI serves the seed's token API, /api/v1/tokens/*: consume through
// a provider, read quotas, and buy tokens (the purchase saga).
type tokenAPI struct {
	s         *Service
	log       *slog.Logger
	auth      *callerAuth
	providers *providerClient
	idem      *idemCache
	sagas     *purchases
	now       func() time.Time
}

// newTokenAPI builds the token API of s from s.cfg.Tokens (validated).
func newTokenAPI(s *Service) *tokenAPI {
	tc := s.cfg.Tokens
	trusted, _ := parseCIDRs(tc.TrustedProxies) // validated with the config
	tierFor := func(roles []string) string {
		if p := s.limits.Load().policy; p != nil {
			return p.TierFor(roles)
		}
		return ""
	}
	a := &tokenAPI{
		s: s, log: s.log, now: time.Now,
		auth:      &callerAuth{verify: jwks.New(jwks.Options{URL: tc.JWKSURL, Issuer: tc.Issuer, Audience: tc.Audience}), trusted: trusted, tierFor: tierFor},
		providers: newProviderClient(tc.ProviderURLs, tc.ProviderTimeout, tc.ProviderConcurrency),
		idem:      newIdemCache(idemBytes, idemEntryMax, idemTTL, time.Now),
	}
	a.sagas = &purchases{
		ledger: s.ledgerSagas, credit: s.store, windowCredit: a.windowCredit, log: s.log, now: time.Now,
		simulateFailure: tc.SagaSimulateFailure, staleAfter: tc.SagaStaleAfter, interval: tc.SagaRecoveryInterval,
	}
	return a
}

// handler routes the token API.
func (a *tokenAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/tokens/status", a.status)
	mux.HandleFunc("POST /api/v1/tokens/consume", a.withCaller(a.consume))
	mux.HandleFunc("POST /api/v1/tokens/purchase", a.withCaller(a.purchase))
	mux.HandleFunc("GET /api/v1/tokens/purchase/{sagaId}", a.withCaller(a.purchaseStatus))
	mux.HandleFunc("GET /api/v1/tokens/quota", a.withCaller(a.userQuota))
	mux.HandleFunc("GET /api/v1/tokens/quota/org", a.withCaller(a.orgQuota))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, apiErr(http.StatusNotFound, "not_found", "no such resource"))
	})
	return mux
}

func (a *tokenAPI) status(w http.ResponseWriter, _ *http.Request) {
	serve.WriteJSON(w, http.StatusOK, map[string]any{"service": "token-service", "status": "ok", "timestamp": a.now().UTC()})
}

// withCaller identifies the caller (401, or 503 when authz's key set is
// unreachable) before h.
func (a *tokenAPI) withCaller(h func(http.ResponseWriter, *http.Request, Caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.auth.identify(r)
		switch {
		case errors.Is(err, jwks.ErrUnavailable):
			w.Header().Set("Retry-After", "1")
			writeAPIError(w, apiErr(http.StatusServiceUnavailable, "unavailable", "cannot verify the token now, retry later"))
			return
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="leaky-tokens"`)
			writeAPIError(w, apiErr(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required"))
			return
		}
		h(w, r, c)
	}
}

// apiError is the token API's JSON error envelope: {"error": code,
// "message": text, "status": HTTP status}.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

func apiErr(status int, code, msg string) *apiError {
	return &apiError{Error: code, Message: msg, Status: status}
}

func badInput(msg string) *apiError { return apiErr(http.StatusBadRequest, "invalid_request", msg) }

func writeAPIError(w http.ResponseWriter, e *apiError) { serve.WriteJSON(w, e.Status, e) }

// readJSON reads r's body (at most maxTokensBody bytes) into v, strictly:
// one JSON object, fields of the right types. It returns the raw body.
func readJSON(w http.ResponseWriter, r *http.Request, v any) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokensBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, apiErr(http.StatusRequestEntityTooLarge, "too_large", "the body exceeds "+strconv.Itoa(maxTokensBody)+" bytes")
	case err != nil:
		return nil, badInput("cannot read the body")
	}
	trimmed := strings.TrimSpace(string(body))
	if !strings.HasPrefix(trimmed, "{") {
		return nil, badInput("the body must be a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, badInput(te.Field + ": wrong type")
		}
		return nil, badInput("malformed JSON body")
	}
	if dec.More() {
		return nil, badInput("malformed JSON body: data after the JSON value")
	}
	return body, nil
}

// validUserID reports whether id is a user id as authz issues them: a
// UUID in its canonical form.
func validUserID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && len(id) == 36 && u.String() == strings.ToLower(id)
}

// checkOwner validates the userId and orgId of a request and that c may
// act on them: the fields' 400s first, then 403.
func checkOwner(c Caller, userID, orgID string) *apiError {
	switch {
	case userID == "":
		return badInput("userId is required")
	case !validUserID(userID):
		return badInput("invalid userId")
	case orgID != "" && !contract.ValidOrgID(orgID):
		return badInput("invalid orgId")
	case !c.MayUser(userID):
		return apiErr(http.StatusForbidden, "forbidden", "you may act only for your own user id")
	case orgID != "" && !c.MayOrg(orgID):
		return apiErr(http.StatusForbidden, "forbidden", "you are not a member of that organisation")
	}
	return nil
}

// idempotencyKey reads the Idempotency-Key header, trimmed ("" = none).
func idempotencyKey(r *http.Request) (string, *apiError) {
	k := strings.TrimSpace(r.Header.Get("Idempotency-Key"))
	if len(k) > 100 {
		return "", badInput("idempotency key too long")
	}
	return k, nil
}
