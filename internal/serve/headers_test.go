package serve

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHugeHeaderIsJSON431: a header block over HTTPMaxHeaderBytes is
// answered 431 with the JSON error envelope, not net/http's plain text;
// one under it is served.
func TestHugeHeaderIsJSON431(t *testing.T) {
	cfg := testConfig()
	cfg.HTTPMaxHeaderBytes = 8 << 10
	s := start(t, cfg, Options{})
	for _, c := range []struct {
		name string
		size int
		want int
	}{
		{"under the bound", 4 << 10, http.StatusOK},
		{"just over the bound", 9 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"twice the bound", 16 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr()+"/livez", nil)
		req.Header.Set("X-Filler", strings.Repeat("a", c.size))
		client := http.Client{Timeout: 10 * time.Second}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: GET /livez: %v", c.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: GET /livez = %d %q, want %d", c.name, resp.StatusCode, body, c.want)
			continue
		}
		if c.want == http.StatusOK {
			continue
		}
		var e ErrorBody
		if err := json.Unmarshal(body, &e); err != nil || e.Error != "header_too_large" || e.Message == "" {
			t.Errorf("%s: body = %q (%v), want the JSON error envelope with header_too_large", c.name, body, err)
		}
	}
}
