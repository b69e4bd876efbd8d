package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// Errors of a provider call.
var (
	// errBulkheadFull: too many calls in flight to the provider; it was
	// not called.
	errBulkheadFull = errors.New("too many calls in flight to the provider")
	// errCircuitOpen: the provider failed too often lately; it was not
	// called.
	errCircuitOpen = errors.New("provider circuit open")
	// errUnknownProvider: no base URL is configured for the provider.
	errUnknownProvider = errors.New("unknown provider")
)

// maxProviderReply bounds a provider's answer, in bytes.
const maxProviderReply = 4 << 20

// maxReportedUsage is the largest usage believed from a provider: more is
// absurd for one call, and the estimate is charged instead.
const maxReportedUsage = 1_000_000

// providerReply is a provider's answer to the seed's chat call.
type providerReply struct {
	Body  json.RawMessage // the provider's JSON, unchanged
	Usage int64           // total tokens it reported; 0 when missing or absurd
}

// providerClient calls the providers' seed API, POST
// {base}/api/v1/{provider}/chat, with a deadline per attempt, retries
// with exponential backoff and jitter on failures that cannot have reached
// the provider's logic (connect errors) or that it reports as its own
// (5xx) — never on 4xx or 429 — a circuit breaker per provider and a
// bulkhead (a bound on calls in flight) per provider.
type providerClient struct {
	base     map[string]string
	http     *http.Client
	timeout  time.Duration
	attempts int           // tries per call, the first included
	backoff  time.Duration // the first retry's mean delay; doubled each retry
	breakers map[string]*breaker
	slots    map[string]chan struct{}
}

// newProviderClient returns a client of the providers in base (name → base
// URL), each with concurrency calls in flight at most.
func newProviderClient(base map[string]string, timeout time.Duration, concurrency int) *providerClient {
	p := &providerClient{
		base: base, http: &http.Client{Transport: providerTransport(concurrency)}, timeout: timeout, attempts: 3, backoff: 50 * time.Millisecond,
		breakers: map[string]*breaker{}, slots: map[string]chan struct{}{},
	}
	for name := range base {
		p.breakers[name] = &breaker{threshold: 5, coolDown: 30 * time.Second, now: time.Now}
		p.slots[name] = make(chan struct{}, concurrency)
	}
	return p
}

// known reports whether provider has a base URL.
func (p *providerClient) known(provider string) bool { _, ok := p.base[provider]; return ok }

// Chat sends {"prompt": prompt} (and "messages" when set) to provider.
// A call that ends because ctx ended is no outcome for the breaker: the
// caller gave up, the provider did not fail.
func (p *providerClient) Chat(ctx context.Context, provider, prompt string, messages json.RawMessage) (providerReply, error) {
	base, ok := p.base[provider]
	if !ok {
		return providerReply{}, errUnknownProvider
	}
	select {
	case p.slots[provider] <- struct{}{}:
		defer func() { <-p.slots[provider] }()
	default:
		return providerReply{}, errBulkheadFull
	}
	br := p.breakers[provider]
	if !br.allow() {
		return providerReply{}, errCircuitOpen
	}
	body, _ := json.Marshal(struct {
		Prompt   string          `json:"prompt"`
		Messages json.RawMessage `json:"messages,omitempty"`
	}{prompt, messages})
	url := base + "/api/v1/" + provider + "/chat"
	var err error
	for try := 0; try < p.attempts; try++ {
		if try > 0 {
			if werr := sleepCtx(ctx, jitter(p.backoff<<(try-1))); werr != nil {
				break
			}
		}
		var reply providerReply
		var retry bool
		reply, retry, err = p.attempt(ctx, url, body)
		if err == nil {
			br.record(true)
			return reply, nil
		}
		if !retry {
			break
		}
	}
	if ctx.Err() != nil {
		// The caller gave up (its context ended), not the provider: the
		// breaker learns nothing, and a half-open probe is let go so that
		// the next call probes.
		br.abandon()
		return providerReply{}, err
	}
	// A 4xx (429 included) is the provider answering: it is up.
	var se *statusError
	br.record(errors.As(err, &se) && se.code < 500)
	return providerReply{}, err
}

// statusError is a provider's answer other than 200.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("provider answered %d", e.code) }

// attempt makes one call; retry reports whether a failure may be retried.
func (p *providerClient) attempt(ctx context.Context, url string, body []byte) (reply providerReply, retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return providerReply{}, false, fmt.Errorf("provider request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		var op *net.OpError
		return providerReply{}, errors.As(err, &op) && op.Op == "dial", fmt.Errorf("provider call: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxProviderReply+1))
	switch {
	case err != nil:
		return providerReply{}, false, fmt.Errorf("provider answer: %w", err)
	case resp.StatusCode >= 500:
		return providerReply{}, true, &statusError{resp.StatusCode}
	case resp.StatusCode != http.StatusOK:
		return providerReply{}, false, &statusError{resp.StatusCode}
	case len(data) > maxProviderReply:
		return providerReply{}, false, errors.New("provider answer too large")
	}
	var parsed struct {
		Usage *struct {
			Prompt     *int64 `json:"prompt_tokens"`
			Completion *int64 `json:"completion_tokens"`
			Total      *int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &parsed); err != nil || !json.Valid(data) || data[0] != '{' {
		return providerReply{}, false, errors.New("provider answer: not a JSON object")
	}
	reply = providerReply{Body: json.RawMessage(data)}
	if u := parsed.Usage; u != nil && u.Total != nil && *u.Total > 0 && *u.Total <= maxReportedUsage &&
		(u.Prompt == nil || u.Completion == nil || *u.Prompt+*u.Completion == *u.Total) {
		reply.Usage = *u.Total
	}
	return reply, false, nil
}

// jitter returns a delay drawn uniformly from [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// breaker is a circuit breaker: threshold consecutive failed calls open
// it for coolDown, during which calls are refused; then one call (the
// half-open probe) is let through, and its outcome closes or re-opens it.
type breaker struct {
	threshold int
	coolDown  time.Duration
	now       func() time.Time

	mu       sync.Mutex
	failures int
	openAt   time.Time // zero: closed
	probing  bool
}

// allow reports whether a call may be made now.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openAt.IsZero():
		return true
	case b.probing || b.now().Sub(b.openAt) < b.coolDown:
		return false
	}
	b.probing = true
	return true
}

// abandon notes a call that ended without an outcome (its caller gave
// up): the counts stay, and a probe in flight is cleared.
func (b *breaker) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// record notes a call's outcome.
func (b *breaker) record(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.failures, b.openAt, b.probing = 0, time.Time{}, false
		return
	}
	b.failures++
	if b.probing || b.failures >= b.threshold {
		b.openAt, b.probing = b.now(), false
	}
}

// providerTransport keeps as many idle connections to each provider as
// calls may be in flight to it (the bulkhead), instead of net/http's two:
// under load most calls would otherwise dial a new connection.
func providerTransport(concurrency int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(concurrency, 2)
	t.MaxIdleConns = 0 // no bound across hosts; each host is bounded above
	return t
}
