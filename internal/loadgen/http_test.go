package loadgen

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHTTPTargetCountsStatusesAndSendsTheRequest(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(b) != `{"x":1}` || r.Header.Get("x-api-key") != "k" ||
			r.Header.Get("content-type") != "application/json" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		if n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()

	tg, err := NewHTTP(srv.Client(), HTTPOptions{URL: srv.URL + "/v1/chat/completions", Body: `{"x":1}`, Header: http.Header{"X-Api-Key": {"k"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := tg.Do(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(map[string]int64{"200": 2, "429": 2}, tg.Answers()); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}

	srv.Close()
	if err := tg.Do(context.Background(), 0); err == nil {
		t.Error("Do against a closed server: want a transport error")
	}
}

func TestHTTPOptionsValidate(t *testing.T) {
	for _, u := range []string{"", "ftp://x/", "http://", "http://user:pw@host/", "::"} {
		if err := (HTTPOptions{URL: u}).Validate(); err == nil {
			t.Errorf("url %q: want an error", u)
		}
	}
	if err := (HTTPOptions{URL: "http://127.0.0.1:8080/openai/v1/chat/completions"}).Validate(); err != nil {
		t.Error(err)
	}
}
