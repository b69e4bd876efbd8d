package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/authz/keyauth"
	"github.com/leakytokens/leaky/authz/keyring"
	"github.com/leakytokens/leaky/authz/oauth"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// MaxCredentialLen bounds the Authorization and X-Api-Key values Check
// accepts; the HTTP API holds to it too.
const MaxCredentialLen = 8 << 10

// TokenVerifier verifies a JWT in memory (keyring.Tokens).
type TokenVerifier interface {
	Verify(raw string) (*keyring.Claims, error)
}

// KeyVerifier verifies an API key, from its cache or the store
// (keyauth.Verifier): it returns the owner, or keyauth.ErrInvalid,
// keyauth.ErrExpired or another error when the store failed, and how it
// answered (keyauth.Hit, Miss or Malformed).
type KeyVerifier interface {
	Verify(ctx context.Context, raw string) (store.Principal, string, error)
}

// PolicySource returns the current policy; an *atomic.Pointer does.
type PolicySource interface {
	Load() *policy.Policy
}

// Options configure a Server.
type Options struct {
	PublicPaths      []string // path prefixes let through without credentials
	AdminPaths       []string // path prefixes allowed only to role ADMIN
	DefaultMaxTokens int64    // completion tokens assumed when a body names no limit
	// StoreFailure is the answer when the store fails or is too slow:
	// "deny" (a 503 JSON answer) or "error" (gRPC UNAVAILABLE).
	StoreFailure string
	Logger       *slog.Logger
	// Registerer takes the Server's metrics (leaky_authz_checks_total and
	// the others in metrics.go).
	Registerer prometheus.Registerer
}

// Server answers Envoy's ext_authz Check. A JWT is verified in memory; an
// API key through the KeyVerifier's cache, else the store under its
// deadline. Safe for concurrent use.
type Server struct {
	tokens  TokenVerifier
	keys    KeyVerifier
	policy  PolicySource
	opt     Options
	metrics *metrics
	logger  *slog.Logger
	// storeLog limits store-failure warnings to one a second; the metric
	// counts them all.
	storeLog *serve.Throttle
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns a Server deciding with tokens, keys and the policy's tiers
// and providers. It registers its metrics on opt.Registerer.
func New(tokens TokenVerifier, keys KeyVerifier, pol PolicySource, opt Options) *Server {
	return &Server{tokens: tokens, keys: keys, policy: pol, opt: opt, metrics: newMetrics(opt.Registerer),
		logger: opt.Logger, storeLog: serve.NewThrottle(time.Second)}
}

// denial is a refused check: its HTTP status, stable error code and message.
type denial struct {
	status  typev3.StatusCode
	code    string
	message string
}

func (d *denial) Error() string { return d.code + ": " + d.message }

func unauthenticated(msg string) *denial {
	return &denial{typev3.StatusCode_Unauthorized, "unauthenticated", msg}
}

func forbidden(code, msg string) *denial {
	return &denial{typev3.StatusCode_Forbidden, code, msg}
}

// Check implements authv3.AuthorizationServer.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	h := requestHeaders(httpReq)
	var creds []string
	cred, set, err := s.decide(ctx, httpReq, h, &creds)
	result := "ok"
	var resp *authv3.CheckResponse
	var d *denial
	switch {
	case err == nil:
		resp = okResponse(set, append(forged(h, set), creds...))
	case errors.As(err, &d):
		switch d.status {
		case typev3.StatusCode_Unauthorized:
			result = "unauthenticated"
		case typev3.StatusCode_Forbidden:
			result = "forbidden"
		default:
			result = "invalid"
		}
		resp = deniedResponse(d)
	default: // the store failed or was too slow
		result = "unavailable"
		s.metrics.storeErrors.Inc()
		if ok, skipped := s.storeLog.Allow(time.Now()); ok {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "check: store unavailable",
				slog.String(serve.KeyError, err.Error()), slog.Int64(serve.KeySkipped, skipped))
		}
		if s.opt.StoreFailure == "error" {
			s.metrics.checks.WithLabelValues(cred, result).Inc()
			s.metrics.checkSeconds.Observe(time.Since(start).Seconds())
			return nil, status.Error(codes.Unavailable, "authorization store unavailable")
		}
		resp = deniedResponse(&denial{typev3.StatusCode_ServiceUnavailable, "unavailable", "authorization store unavailable, retry later"})
	}
	s.metrics.checks.WithLabelValues(cred, result).Inc()
	s.metrics.checkSeconds.Observe(time.Since(start).Seconds())
	return resp, nil
}

// decide authenticates and authorises one request. It returns the kind of
// credential, the headers to set, and a *denial or a store error; it adds
// to creds the credential headers the upstream must not see.
//
// A public path ignores credentials: none is verified, so a stale token
// cannot keep a client from logging in or refreshing, and none is
// charged for. Outside the service's own API they are still removed.
func (s *Server) decide(ctx context.Context, r *authv3.AttributeContext_HttpRequest, h map[string]string, creds *[]string) (string, []*corev3.HeaderValueOption, error) {
	path, ok := cleanPath(r.GetPath())
	if !ok {
		return "none", nil, &denial{typev3.StatusCode_BadRequest, "invalid_request", "malformed request path"}
	}
	rt, ok := judge(r.GetPath(), s.opt.PublicPaths, s.opt.AdminPaths)
	if !ok {
		return "none", nil, &denial{typev3.StatusCode_BadRequest, "invalid_request", "ambiguous request path: a segment spelled as a dot-segment"}
	}
	if rt.public {
		if !rt.self {
			*creds = append(*creds, credentialHeaders(h)...)
		}
		return "none", nil, nil
	}
	pol := s.policy.Load()
	p, cred, err := s.authenticate(ctx, h, rt.self, creds)
	if err != nil {
		return cred, nil, err
	}
	if rt.admin && !p.IsAdmin() {
		return cred, nil, forbidden("forbidden_role", "this path requires role ADMIN")
	}
	set, err := identity(pol, p, h)
	if err != nil {
		return cred, nil, err
	}
	body := r.GetRawBody()
	if len(body) == 0 {
		body = []byte(r.GetBody())
	}
	n, bodyProvider, ok, err := estimateRequest(path, body, h, s.opt.DefaultMaxTokens)
	if err != nil {
		return cred, nil, err
	}
	prov := providerOf(pol, path, bodyProvider)
	if !ok && prov != "" {
		// No body the estimator reads (a GET, an empty POST): 1 token,
		// so the request still counts. The gateway's hits_addend is read
		// from this header, and Envoy drops a descriptor whose hits_addend
		// it cannot read: without it the request would not be limited.
		n, ok = 1, true
	}
	if ok {
		set = append(set, header(contract.HeaderEstimate, strconv.FormatInt(n, 10)))
	}
	if prov != "" {
		set = append(set, header(contract.HeaderProvider, prov))
	}
	return cred, set, nil
}

// authenticate finds and verifies the credential: X-Api-Key, or
// Authorization: Bearer carrying a JWT or an API key (as OpenAI-style
// clients send it). Elsewhere than under selfPaths a request with both is
// refused rather than guessing which one counts, and the credential header
// is added to creds: neither our API keys nor our JWTs reach the upstream.
// Under selfPaths the credentials stay, and Authorization wins, as in the
// HTTP API. A client's JWT must name its owner, the account charged.
func (s *Server) authenticate(ctx context.Context, h map[string]string, self bool, creds *[]string) (store.Principal, string, error) {
	raw, isKey := "", false
	k, hasKey := h[contract.HeaderAPIKey]
	a, hasAuth := h["authorization"]
	switch {
	case hasKey && hasAuth && !self:
		return store.Principal{}, "none", unauthenticated("send one credential: X-Api-Key or Authorization, not both")
	case hasKey && !hasAuth:
		if !self {
			*creds = append(*creds, contract.HeaderAPIKey)
		}
		raw, isKey = strings.TrimSpace(k), true
	case hasAuth:
		scheme, tok, found := strings.Cut(strings.TrimSpace(a), " ")
		tok = strings.TrimSpace(tok)
		if !found || !strings.EqualFold(scheme, "bearer") || tok == "" || strings.ContainsAny(tok, " ,") {
			return store.Principal{}, "none", unauthenticated("authorization must be a single Bearer token")
		}
		if !self {
			*creds = append(*creds, "authorization")
		}
		raw, isKey = tok, strings.HasPrefix(tok, "lt_")
	default:
		return store.Principal{}, "none", unauthenticated("credentials required: Authorization: Bearer <token> or X-Api-Key")
	}
	if len(raw) > MaxCredentialLen {
		return store.Principal{}, "none", unauthenticated("credential too long")
	}
	if isKey {
		p, how, err := s.keys.Verify(ctx, raw)
		s.metrics.keyCache.WithLabelValues(how).Inc()
		switch {
		case errors.Is(err, keyauth.ErrInvalid):
			return store.Principal{}, "api_key", unauthenticated("invalid api key")
		case errors.Is(err, keyauth.ErrExpired):
			return store.Principal{}, "api_key", unauthenticated("api key expired")
		case err != nil:
			return store.Principal{}, "api_key", err
		}
		return p, "api_key", nil
	}
	c, err := s.tokens.Verify(raw)
	if err != nil {
		return store.Principal{}, "jwt", unauthenticated("invalid or expired token")
	}
	if c.ClientID != "" && c.ClientID != oauth.FirstPartyClientID && c.Owner == "" {
		// Issued before client tokens named their owner: charging it to
		// the client's own account would give each client a fresh budget.
		return store.Principal{}, "jwt", unauthenticated("client token without an owner, request a new one")
	}
	return c.Principal(), "jwt", nil
}

// identity is the headers naming who pays for the request: the user and
// tier of the account charged (a client's owner, see
// store.Principal.Account), the caller's own roles, and the organisation:
// the one an organisation's app belongs to, else the one named in
// x-leaky-org when the caller is a member (else a *denial).
func identity(pol *policy.Policy, p store.Principal, h map[string]string) ([]*corev3.HeaderValueOption, error) {
	account, accountRoles := p.Account()
	set := []*corev3.HeaderValueOption{
		header(contract.HeaderUserID, account),
		header(contract.HeaderTier, pol.TierFor(accountRoles)),
		header(contract.HeaderRoles, strings.Join(p.Roles, ",")),
	}
	org := strings.TrimSpace(h[contract.HeaderOrg])
	if p.Owner != "" && len(p.Orgs) == 1 && (org == "" || org == p.Orgs[0]) {
		org = p.Orgs[0] // an organisation's app is charged to its organisation
	}
	if org != "" {
		if !store.ValidOrgID(org) || !slices.Contains(p.Orgs, org) {
			return nil, forbidden("forbidden_org", "the caller is not a member of the organisation named in "+contract.HeaderOrg)
		}
		set = append(set, header(contract.HeaderOrgID, org))
	}
	return set, nil
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func okResponse(set []*corev3.HeaderValueOption, remove []string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: set, HeadersToRemove: remove,
		}},
	}
}

// deniedResponse is the one place a refusal becomes a wire answer: the
// status, the JSON error envelope of every HTTP answer (serve.ErrorBody,
// as the HTTP API's) and, for 401, WWW-Authenticate.
func deniedResponse(d *denial) *authv3.CheckResponse {
	body, _ := json.Marshal(serve.ErrorBody{Error: d.code, Message: d.message})
	hdrs := []*corev3.HeaderValueOption{header("content-type", "application/json")}
	code := codes.PermissionDenied
	switch d.status {
	case typev3.StatusCode_Unauthorized:
		code = codes.Unauthenticated
		hdrs = append(hdrs, header("www-authenticate", `Bearer realm="leaky-tokens", error="invalid_token"`))
	case typev3.StatusCode_ServiceUnavailable:
		code = codes.Unavailable
		hdrs = append(hdrs, header("retry-after", "1"))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: d.code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: d.status}, Headers: hdrs, Body: string(body),
		}},
	}
}
