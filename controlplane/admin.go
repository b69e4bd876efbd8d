package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/leakytokens/leaky/internal/jwks"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// AdminRole is the role the admin API requires.
const AdminRole = "ADMIN"

// maxTierBody bounds a PUT body, in bytes.
const maxTierBody = 64 << 10

// applyWait bounds how long a PUT waits for its change to be in effect
// (in the snapshot served, and acknowledged by every connected subscriber
// of the policy) before it answers 202 instead of 200.
const applyWait = 10 * time.Second

// verifier checks an access token (internal/jwks.Verifier).
type verifier interface {
	Verify(ctx context.Context, raw string) (*jwks.Claims, error)
}

// admin is the admin API: /api/v1/admin/tiers and /api/v1/admin/snapshot,
// every request authenticated by an ADMIN token.
type admin struct {
	source   policySource
	pipeline *pipeline
	nodes    *nodes
	verify   verifier
	m        *metrics
	log      *slog.Logger

	writeMu sync.Mutex // one PUT at a time: read, edit, validate, write
}

// apiError is an answer other than 200: a status and the JSON envelope.
type apiError struct {
	code int
	body serve.ErrorBody
}

func (e *apiError) Error() string { return e.body.Message }

func fail(code int, kind, format string, args ...any) *apiError {
	return &apiError{code, serve.ErrorBody{Error: kind, Message: fmt.Sprintf(format, args...)}}
}

// handler routes the admin API; every route needs an ADMIN token.
func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/admin/tiers", a.route("tiers", a.tiers))
	mux.HandleFunc("PUT /api/v1/admin/tiers/{name}", a.route("tier", a.putTier))
	mux.HandleFunc("GET /api/v1/admin/snapshot", a.route("snapshot", a.snapshot))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { unmatched(mux, w, r) })
	return mux
}

// route wraps h with authentication, the error envelope and the metric.
func (a *admin) route(name string, h func(*http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code, body, err := 0, any(nil), a.authenticate(r)
		if err == nil {
			code, body, err = h(r)
		}
		var ae *apiError
		switch {
		case errors.As(err, &ae):
			if ae.code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="leaky-tokens admin"`)
			}
			code, body = ae.code, ae.body
		case err != nil:
			a.log.Error("admin request failed", serve.KeyRoute, name, serve.KeyError, err.Error())
			code, body = http.StatusInternalServerError, serve.ErrorBody{Error: "internal", Message: "internal error"}
		}
		a.m.adminRequests.WithLabelValues(name, fmt.Sprint(code)).Inc()
		serve.WriteJSON(w, code, body)
	}
}

// authenticate requires a bearer token verified against authz's key set
// with role ADMIN: 401 without one or with a bad one, 403 without the
// role, 503 when the key set cannot be had.
func (a *admin) authenticate(r *http.Request) error {
	h := r.Header.Get("Authorization")
	scheme, raw, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return fail(http.StatusUnauthorized, "unauthenticated", "an ADMIN bearer token (Authorization: Bearer …) is required")
	}
	claims, err := a.verify.Verify(r.Context(), strings.TrimSpace(raw))
	switch {
	case errors.Is(err, jwks.ErrUnavailable):
		return fail(http.StatusServiceUnavailable, "unavailable", "the token cannot be verified now: authz's key set is unavailable")
	case err != nil:
		return fail(http.StatusUnauthorized, "invalid_token", "the bearer token is not valid")
	case !claims.HasRole(AdminRole):
		return fail(http.StatusForbidden, "forbidden", "role %s is required", AdminRole)
	}
	return nil
}

// tiersAnswer is GET /api/v1/admin/tiers.
type tiersAnswer struct {
	Source      string          `json:"source"`
	DefaultTier string          `json:"default_tier"`
	Tiers       map[string]Tier `json:"tiers"`
}

// tiers lists the tiers of the policy in effect.
func (a *admin) tiers(*http.Request) (int, any, error) {
	cfg := a.pipeline.state().Config
	if cfg == nil {
		return 0, nil, fail(http.StatusServiceUnavailable, "unavailable", "no valid policy has been loaded yet")
	}
	p := cfg.Policy()
	return http.StatusOK, tiersAnswer{Source: cfg.Source(), DefaultTier: p.DefaultTier, Tiers: tiersOf(p)}, nil
}

// tierAnswer is a PUT's answer: the tier as written and the snapshot
// version in effect once the change was applied ("" when none yet).
type tierAnswer struct {
	Name    string `json:"name"`
	Tier    Tier   `json:"tier"`
	Applied bool   `json:"applied"` // false: written, not in effect within the wait (202)
	Version string `json:"version"`
	Reason  string `json:"reason,omitempty"` // why it is not in effect, when known
}

// putTier creates or replaces a tier: read the source, edit the policy's
// node tree, validate the whole result, write it to the source, then wait
// for the source's watch to bring it into effect.
func (a *admin) putTier(r *http.Request) (int, any, error) {
	name := r.PathValue("name")
	t, err := decodeTier(r)
	if err != nil {
		return 0, nil, err
	}
	a.writeMu.Lock()
	defer a.writeMu.Unlock()
	cur, err := a.source.read(r.Context())
	if err != nil {
		return 0, nil, fail(http.StatusConflict, "policy_unreadable", "the policy source cannot be edited now: %v", err)
	}
	edited, err := setTier(cur.files[cur.policyName], name, t)
	if err != nil {
		return 0, nil, fail(http.StatusConflict, "policy_unreadable", "the policy source cannot be edited: %v", err)
	}
	files := maps.Clone(cur.files)
	files[cur.policyName] = edited
	snap, err := policy.FromContents(a.source.name(), files)
	if err != nil {
		return 0, nil, fail(http.StatusUnprocessableEntity, "invalid_policy", "tier %s: the policy would be invalid: %v", name, err)
	}
	if err := a.source.write(r.Context(), cur, edited); err != nil {
		return 0, nil, writeError(err)
	}
	a.source.refresh()
	ctx, cancel := context.WithTimeout(r.Context(), applyWait)
	defer cancel()
	code, applied, reason := http.StatusOK, true, ""
	if err := a.waitApplied(ctx, snap.Digest()); err != nil {
		code, applied, reason = http.StatusAccepted, false, err.Error()
	}
	a.log.Info("tier written", "tier", name, serve.KeyPath, cur.policyName, "applied", applied)
	return code, tierAnswer{Name: name, Tier: t, Applied: applied, Version: a.pipeline.state().Version, Reason: reason}, nil
}

// waitApplied waits until the policy with digest d is in the snapshot
// served and every connected subscriber of the policy (the Runtime: the
// ratelimit services and authz) has acknowledged that snapshot, so that
// the next request is decided by it; errNotApplied when ctx ends first (a
// subscriber that NACKs it never acknowledges).
func (a *admin) waitApplied(ctx context.Context, d [sha256.Size]byte) error {
	if err := a.pipeline.waitConfig(ctx, d); err != nil {
		return err
	}
	// The version served now, read again on every poll: a push after ours
	// (a catalog change, another PUT) is acknowledged instead of ours and
	// carries our change too.
	return a.nodes.waitACKed(ctx, resource.RuntimeType, func() string {
		if st := a.pipeline.state(); st.Snap != nil {
			return st.Snap.GetVersion(resource.RuntimeType)
		}
		return ""
	})
}

// writeError turns a source's write failure into an answer.
func writeError(err error) error {
	switch {
	case errors.Is(err, errReadOnly):
		return fail(http.StatusConflict, "read_only", "the policy in use is the embedded example, which cannot be changed: start the control plane with -policy FILE (or -consul-addr) to edit tiers")
	case errors.Is(err, errConflict):
		return fail(http.StatusConflict, "conflict", "the policy was changed by another writer meanwhile: read it again and retry")
	}
	return fmt.Errorf("write the policy: %w", err)
}

// decodeTier reads a PUT body: one JSON object with only Tier's fields.
func decodeTier(r *http.Request) (Tier, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Tier{}, fail(http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be application/json")
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxTierBody+1))
	if err != nil {
		return Tier{}, fail(http.StatusBadRequest, "bad_request", "cannot read the body")
	}
	if len(data) > maxTierBody {
		return Tier{}, fail(http.StatusRequestEntityTooLarge, "too_large", "the body is larger than %d bytes", maxTierBody)
	}
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		return Tier{}, fail(http.StatusBadRequest, "bad_request", "the body must be UTF-8 text without NUL")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Tier
	if err := dec.Decode(&t); err != nil {
		return Tier{}, fail(http.StatusBadRequest, "bad_request", "malformed tier: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Tier{}, fail(http.StatusBadRequest, "bad_request", "malformed tier: data after the JSON object")
	}
	if t.Buckets == nil {
		return Tier{}, fail(http.StatusBadRequest, "bad_request", "malformed tier: buckets is required (an object, {} for none)")
	}
	return t, nil
}

// snapshotAnswer is GET /api/v1/admin/snapshot.
type snapshotAnswer struct {
	Version   string              `json:"version"` // "" before the first push
	PushedAt  *time.Time          `json:"pushed_at,omitempty"`
	Resources map[string][]string `json:"resources"` // resource names by type URL
	Nodes     []NodeStatus        `json:"nodes"`
	Degraded  []string            `json:"degraded"`
}

// snapshot shows what is served, and to whom with what outcome.
func (a *admin) snapshot(*http.Request) (int, any, error) {
	st := a.pipeline.state()
	ans := snapshotAnswer{Version: st.Version, Resources: map[string][]string{}, Nodes: a.nodes.list(), Degraded: st.Problems}
	if ans.Degraded == nil {
		ans.Degraded = []string{}
	}
	if st.Snap != nil {
		ans.PushedAt = &st.PushedAt
		for i := range types.UnknownType {
			typ, err := cachev3.GetResponseTypeURL(i)
			if err != nil || st.Snap.Resources[i].Version == "" {
				continue
			}
			ans.Resources[typ] = slices.Sorted(maps.Keys(st.Snap.GetResources(typ)))
		}
	}
	return http.StatusOK, ans, nil
}

// unmatched answers a path or method no route has: 405 with Allow when
// another method has the path, else 404, both as JSON.
func unmatched(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); m != r.Method && pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		serve.WriteJSON(w, http.StatusMethodNotAllowed, serve.ErrorBody{Error: "method_not_allowed", Message: r.Method + " is not allowed here"})
		return
	}
	serve.WriteJSON(w, http.StatusNotFound, serve.ErrorBody{Error: "not_found", Message: "no such endpoint"})
}
