package estimate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// fuzzPaths are the paths FuzzEstimate sends its bodies to, one per API.
var fuzzPaths = []string{
	"/openai/v1/chat/completions", "/openai/v1/completions", "/openai/v1/responses",
	"/openai/v1/embeddings", "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
	"/api/v1/tokens/consume", "/custom/v1/anything",
	"/gemini/v1beta/models/gemini-2.0-flash:batchGenerateContent",
}

// implied is what a body decoded by encoding/json implies a request to
// path costs: the definition the estimator must never fall below. The
// prompt is ceil(B/4) + N, B the UTF-8 bytes of every member name and
// string in the decoded value, N the count of its numbers; the completion
// is the limit the path's API reads from the decoded value, whose
// duplicate keys encoding/json resolves as Python's and JavaScript's
// parsers do (the last one wins), times its number of choices; a limit
// that is absent, null or not a count (parseCount) means defaultMax. Where
// two names may hold the limit (max_completion_tokens, else max_tokens;
// Gemini's JSON or proto name), the first that holds a count is read. ok is false when encoding/json refuses the body.
func implied(path string, body []byte, defaultMax int64) (int64, bool) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if !json.Valid(body) {
		return 0, false
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return 0, false
	}
	var strBytes, numbers int64
	var limitNamed []any
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				strBytes += int64(len(k))
				switch k {
				case "max_tokens", "max_completion_tokens", "max_output_tokens", "maxOutputTokens", "max_new_tokens", "maxTokens":
					limitNamed = append(limitNamed, e)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			strBytes += int64(len(x))
		case json.Number:
			numbers += ceilDiv(int64(len(x)), 3)
		}
	}
	walk(v)
	root, _ := v.(map[string]any)
	completion, choices := impliedCompletion(apiOf(path), root, limitNamed, defaultMax)
	total := ceilDiv(strBytes, 4) + numbers + mulClamp(completion, choices)
	if t, ok := countOf(root["tokens"]); ok && apiOf(path) == apiSeed {
		total = t
	}
	return clampEstimate(total), true
}

// impliedCompletion is implied's completion limit and number of choices.
func impliedCompletion(a api, root map[string]any, limitNamed []any, defaultMax int64) (int64, int64) {
	limit := func(m map[string]any, names ...string) int64 {
		for _, n := range names { // the first name that holds a count wins
			if c, ok := countOf(m[n]); ok {
				return c
			}
		}
		return defaultMax
	}
	choices := func(m map[string]any, names ...string) int64 {
		out := int64(1)
		for _, n := range names {
			if c, ok := countOf(m[n]); ok {
				out = max(out, c)
			}
		}
		return out
	}
	switch a {
	case apiChat:
		return limit(root, "max_completion_tokens", "max_tokens"), choices(root, "n")
	case apiCompletions:
		return limit(root, "max_tokens"), choices(root, "n", "best_of")
	case apiResponses:
		return limit(root, "max_output_tokens"), 1
	case apiEmbeddings:
		return 0, 1
	case apiGemini:
		var out, n int64 = -1, 1
		for _, spelling := range []string{"generationConfig", "generation_config"} {
			if gc, present := root[spelling]; present {
				m, _ := gc.(map[string]any)
				out = max(out, limit(m, "maxOutputTokens", "max_output_tokens"))
				n = max(n, choices(m, "candidateCount", "candidate_count"))
			}
		}
		if out < 0 {
			out = defaultMax
		}
		return out, n
	}
	var sum int64
	for _, v := range limitNamed {
		if c, ok := countOf(v); ok {
			sum += c
		}
	}
	return max(sum, defaultMax), 1
}

// countOf reads v as a count: a JSON number or a string holding one.
func countOf(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		return parseCount([]byte(x))
	case string:
		return parseCount([]byte(x))
	}
	return 0, false
}

// estimateSeeds are the bodies of issue 7 and their kin, by the index in
// fuzzPaths of the path they go to.
func estimateSeeds() []struct {
	path int
	body string
} {
	long := strings.Repeat("x", 4000)
	return []struct {
		path int
		body string
	}{
		{0, `{"model":"gpt-4o","messages":[{"role":"user","c\u006fntent":"` + long + `"}],"max_tokens":1}`},
		{0, `{"messages":[{"role":"user","content":"hi"}],"max\u005ftokens":100000,"max_tokens":1}`},
		{0, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000,"max_tokens":1}`},
		{0, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":null,"n":8}`},
		{0, `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"` + long + `","parameters":{"type":"object","properties":{"` + long + `":{"type":"string"}}}}}],"max_tokens":1}`},
		{0, `{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"` + long + `"}}]}],"max_tokens":1}`},
		{0, `{"messages":[{"role":"user","content":"\u20ac\ud83d\ude00\ud800\u0000é` + "\xff" + `"}],"max_tokens":"12"}`},
		{1, `{"prompt":[[1,2,3],[4,5]],"max_tokens":5,"n":2,"best_of":4}`},
		{2, `{"model":"gpt-4o","input":"` + long + `","instructions":"be brief","max_output_tokens":16}`},
		{2, `{"input":[{"role":"user","content":[{"type":"input_text","text":"` + long + `"}]}]}`},
		{3, `{"model":"text-embedding-3-small","input":"` + long + `"}`},
		{3, `{"input":["a","b"]}`},
		{3, `{"input":[[1,2,3,4,5,6,7,8,9,10]]}`},
		{4, `{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":60000}}`},
		{4, `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1},"generationConfig":{}}`},
		{4, `{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":"100","candidateCount":4},"system_instruction":{"parts":[{"text":"` + long + `"}]}}`},
		{5, `{"userId":"u","provider":"gemini","tokens":42}`},
		{5, `{"tokens":-1,"tokens":1000000}`},
		{6, `{"prompt":"` + long + `","parameters":{"max_new_tokens":5000}}`},
		{6, `[` + strings.Repeat("1,", 100) + `1]`},
		{0, "\xef\xbb\xbf" + `{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000,"n":8}`},
		{0, `{"tools":[{"function":{"parameters":` + strings.Repeat(`{"a":`, 80) + `1` + strings.Repeat(`}`, 80) + `}}],"max_tokens":100000,"n":8}`},
		{1, `{"prompt":["a","b","c",[1,2]],"max_tokens":4000,"n":2}`},
		{6, `{"max_tokens":4000,"n":64}`},
		{6, `{"a":{"maxOutputTokens":10,"candidateCount":3}}`},
		{7, `{"requests":[{"request":{"generationConfig":{"maxOutputTokens":8000}}},{"generationConfig":{"max_output_tokens":9000,"candidateCount":2}}]}`},
		{0, `{"schema":{"enum":[` + strings.Repeat("9", 400) + `]}}`},
	}
}

// FuzzEstimate checks that the estimate of a complete body is never below
// what encoding/json's reading of it implies. make test runs it for a
// bounded time (scripts/test.sh).
func FuzzEstimate(f *testing.F) {
	for _, s := range estimateSeeds() {
		f.Add(uint8(s.path), []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, p uint8, body []byte) {
		path := fuzzPaths[int(p)%len(fuzzPaths)]
		got, _, ok := Body(path, body, 1000)
		if !ok {
			return
		}
		if want, ok := implied(path, body, 1000); ok && got < want {
			t.Errorf("estimate(%s, %q) = %d, want at least %d (encoding/json)", path, body, got, want)
		}
		if want, ok := providerReads(path, body); ok && got < want {
			t.Errorf("estimate(%s, %q) = %d, want at least %d (provider)", path, body, got, want)
		}
		text := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
		if want := int64(len(text))/4 + 1000; !validJSON(body) && !strings.HasSuffix(path, "/embeddings") && got < want {
			t.Errorf("estimate(%s, %q) = %d, not JSON, want at least %d", path, body, got, want)
		}
	})
}
