package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
)

// HTTPOptions is the request an HTTP target sends: the gateway's path
// (a completion through the gateway stand-in or Envoy) or a provider's,
// the same request every time.
type HTTPOptions struct {
	URL    string      // http://host:port/path
	Method string      // POST when empty
	Body   string      // the request body
	Header http.Header // extra headers (content-type defaults to application/json)
}

// Validate reports what is wrong with o.
func (o HTTPOptions) Validate() error {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return errors.New("url: want http://host:port/path, without user info")
	}
	return nil
}

// maxHTTPAnswer bounds what an HTTP target reads of one answer; the rest
// is discarded so the connection can be reused.
const maxHTTPAnswer = 4 << 20

// HTTP sends o's request over one client (its transport keeps the
// connections) and counts the answers by status code ("200", "429"). A
// transport error is returned, not counted. It is safe for concurrent use.
type HTTP struct {
	client *http.Client
	o      HTTPOptions
	body   []byte

	mu      sync.Mutex
	answers map[string]int64
}

// NewHTTP returns a target sending o's request with client.
func NewHTTP(client *http.Client, o HTTPOptions) (*HTTP, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Method == "" {
		o.Method = http.MethodPost
	}
	h := o.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if h.Get("content-type") == "" {
		h.Set("content-type", "application/json")
	}
	o.Header = h
	return &HTTP{client: client, o: o, body: []byte(o.Body), answers: make(map[string]int64)}, nil
}

// Do sends the request, reads the whole answer and counts its status.
// i is ignored: every request is the same.
func (t *HTTP) Do(ctx context.Context, _ int) error {
	req, err := http.NewRequestWithContext(ctx, t.o.Method, t.o.URL, bytes.NewReader(t.body))
	if err != nil {
		return err
	}
	req.Header = t.o.Header.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxHTTPAnswer))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	name := strconv.Itoa(resp.StatusCode)
	t.mu.Lock()
	t.answers[name]++
	t.mu.Unlock()
	return nil
}

// Answers returns a copy of the answers so far.
func (t *HTTP) Answers() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[string]int64, len(t.answers))
	for k, v := range t.answers {
		m[k] = v
	}
	return m
}
