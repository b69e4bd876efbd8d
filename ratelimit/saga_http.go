package ratelimit

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/serve"
	"github.com/leakytokens/leaky/ratelimit/ledger"
)

const maxPurchaseTokens = 1_000_000

type purchaseRequest struct {
	UserID     string `json:"userId"`
	OrgID      string `json:"orgId"`
	Provider   string `json:"provider"`
	Tokens     *int64 `json:"tokens"`
	WindowOnly bool   `json:"windowOnly"`
}

// sagaView is a saga as the API shows it.
type sagaView struct {
	SagaID     string        `json:"sagaId"`
	UserID     string        `json:"userId,omitempty"`
	OrgID      string        `json:"orgId,omitempty"`
	Provider   string        `json:"provider,omitempty"`
	Tokens     int64         `json:"tokens,omitempty"`
	WindowOnly bool          `json:"windowOnly,omitempty"`
	Status     ledger.Status `json:"status"`
	Reason     string        `json:"reason,omitempty"`
	CreatedAt  time.Time     `json:"createdAt"`
	UpdatedAt  *time.Time    `json:"updatedAt,omitempty"`
}

// purchase is POST /api/v1/tokens/purchase: 202 {sagaId, status,
// createdAt} once the saga went as far as it could.
func (a *tokenAPI) purchase(w http.ResponseWriter, r *http.Request, c Caller) {
	key, e := idempotencyKey(r)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	var in purchaseRequest
	if _, e := readJSON(w, r, &in); e != nil {
		writeAPIError(w, e)
		return
	}
	in.Provider = strings.TrimSpace(in.Provider)
	if e := checkOwner(c, in.UserID, in.OrgID); e != nil {
		writeAPIError(w, e)
		return
	}
	switch {
	case in.Provider == "":
		e = badInput("provider is required")
	case !a.providers.known(in.Provider):
		e = badInput("unknown provider")
	case in.Tokens == nil:
		e = badInput("tokens is required")
	case *in.Tokens < 1 || *in.Tokens > maxPurchaseTokens:
		e = badInput("tokens must be between 1 and " + strconv.Itoa(maxPurchaseTokens))
	}
	if e != nil {
		writeAPIError(w, e)
		return
	}
	s := ledger.Saga{ID: uuid.NewString(), UserID: in.UserID, Tokens: *in.Tokens, WindowOnly: in.WindowOnly, IdempotencyKey: key,
		Pool: ledger.Pool{Scope: string(contract.ScopeUser), Subject: in.UserID, Provider: in.Provider}}
	if in.OrgID != "" {
		s.Pool = ledger.Pool{Scope: string(contract.ScopeOrg), Subject: in.OrgID, Provider: in.Provider}
	}
	if in.WindowOnly {
		// An ADMIN buying for another: the default tier, as GET /quota reads it.
		q := a.quotaPlanOf(s.Pool, c.TierFor(in.UserID))
		if q == nil {
			writeAPIError(w, badInput("windowOnly: no quota window applies to this pool"))
			return
		}
		s.Window = q.start
	}
	got, err := a.sagas.start(r.Context(), s)
	switch {
	case errors.Is(err, errPurchaseConflict):
		writeAPIError(w, apiErr(http.StatusConflict, "conflict", "Idempotency key reuse with different payload"))
		return
	case errors.Is(err, errNoLedger) || (err != nil && got.ID == ""):
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "token api: purchase not started", slog.String(serve.KeyError, err.Error()))
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, apiErr(http.StatusServiceUnavailable, "unavailable", "purchases are unavailable, retry later"))
		return
	case err != nil:
		// Started: the recovery job finishes or compensates it.
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "token api: purchase left to recovery",
			slog.String("saga_id", got.ID), slog.String(serve.KeyError, err.Error()))
	}
	serve.WriteJSON(w, http.StatusAccepted, sagaView{SagaID: got.ID, Status: got.Status, CreatedAt: got.CreatedAt.UTC()})
}

// purchaseStatus is GET /api/v1/tokens/purchase/{sagaId}: the buyer's
// saga (any for an ADMIN); anyone else's is 404.
func (a *tokenAPI) purchaseStatus(w http.ResponseWriter, r *http.Request, c Caller) {
	id := r.PathValue("sagaId")
	if !validUserID(id) {
		writeAPIError(w, badInput("invalid sagaId"))
		return
	}
	l := a.sagas.ledger()
	if l == nil {
		writeAPIError(w, apiErr(http.StatusNotFound, "not_found", "purchase not found"))
		return
	}
	s, err := l.Saga(r.Context(), id)
	switch {
	case errors.Is(err, ledger.ErrNotFound) || (err == nil && !c.Admin() && s.UserID != c.UserID):
		writeAPIError(w, apiErr(http.StatusNotFound, "not_found", "purchase not found"))
		return
	case err != nil:
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "token api: read saga", slog.String(serve.KeyError, err.Error()))
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, apiErr(http.StatusServiceUnavailable, "unavailable", "the ledger is unavailable, retry later"))
		return
	}
	v := sagaView{SagaID: s.ID, UserID: s.UserID, Provider: s.Pool.Provider, Tokens: s.Tokens, WindowOnly: s.WindowOnly,
		Status: s.Status, Reason: s.Reason, CreatedAt: s.CreatedAt.UTC()}
	if s.Pool.Scope == string(contract.ScopeOrg) {
		v.OrgID = s.Pool.Subject
	}
	up := s.UpdatedAt.UTC()
	v.UpdatedAt = &up
	serve.WriteJSON(w, http.StatusOK, v)
}
