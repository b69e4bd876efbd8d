package estimate

import (
	"encoding/json"
	"strings"
	"testing"
)

// BenchmarkEstimate measures the estimator on a short and a 16 KiB chat
// body, beside encoding/json decoding the same body (what a decoder-based
// estimator would cost at least).
func BenchmarkEstimate(b *testing.B) {
	bodies := map[string]string{
		"short": `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":64}`,
		"16KiB": `{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"` +
			strings.Repeat("lorem ipsum \\u00e9 ", 910) + `"}],"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}],"max_tokens":64}`,
	}
	for name, body := range bodies {
		raw := []byte(body)
		b.Run(name+"/scan", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if n, _, _ := Body(chatPath, raw, 1024); n < 64 {
					b.Fatal(n)
				}
			}
		})
		b.Run(name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				var v any
				if err := json.Unmarshal(raw, &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
