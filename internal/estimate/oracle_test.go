package estimate

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"testing"
)

// providerReads is the least a provider may bill for a request to path, a
// model of each provider written apart from the estimator's rules: the
// text of its strings ÷ 4, plus the completion it may produce, read as
// the provider reads it. A body is parsed as Python's json.loads(bytes)
// does (a UTF-8 byte order mark skipped); ok is false for one it refuses
// or encoding/json cannot model.
func providerReads(path string, body []byte) (int64, bool) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	var v any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if !json.Valid(body) || d.Decode(&v) != nil {
		return 0, false
	}
	var text int64
	var objects []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			objects = append(objects, x)
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			text += int64(len(x))
		}
	}
	walk(v)
	root, _ := v.(map[string]any)
	var completion float64
	switch path {
	case fuzzPaths[0]: // OpenAI chat: max_completion_tokens, else max_tokens; n choices
		completion = first(num(root["max_completion_tokens"]), num(root["max_tokens"])) * max(1, num(root["n"]))
	case fuzzPaths[1]: // OpenAI legacy completions: a prompt batch, best_of candidates each
		completion = num(root["max_tokens"]) * max(1, num(root["n"]), num(root["best_of"])) * prompts(root["prompt"])
	case fuzzPaths[2]: // OpenAI responses
		completion = num(root["max_output_tokens"])
	case fuzzPaths[4]: // Gemini: generationConfig in the JSON or the proto spelling
		completion = gemini(root)
	case fuzzPaths[5]: // the seed's token API: its tokens are the whole charge
		if t := num(root["tokens"]); t > 0 {
			return clampEstimate(int64(t)), true
		}
	case fuzzPaths[6]: // unknown: some object's limit, under some multiplier
		var limit, n float64
		for _, o := range objects {
			for _, k := range []string{"max_tokens", "max_new_tokens", "maxOutputTokens", "max_output_tokens"} {
				limit = max(limit, num(o[k]))
			}
			n = max(n, num(o["n"]), num(o["candidateCount"]), num(o["best_of"]))
		}
		completion = limit * max(1, n)
	case fuzzPaths[7]: // Gemini batch: every request's completion
		for _, o := range objects {
			completion += gemini(o)
		}
	}
	return clampEstimate(int64(min(float64(text/4)+completion, maxEstimate))), true
}

// num reads a JSON number (or a string holding one, as protobuf's JSON
// does) as a count, 0 when it is not one.
func num(v any) float64 {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		s = x
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) || math.IsNaN(f) || f < 0 {
		return 0
	}
	return min(math.Ceil(f), maxEstimate)
}

func first(a, b float64) float64 {
	if a > 0 {
		return a
	}
	return b
}

// prompts counts the prompts of a legacy completion: a string or a list of
// token ids is one, a list of strings or of lists one each.
func prompts(v any) float64 {
	list, ok := v.([]any)
	if !ok {
		return 1
	}
	var n float64
	for _, e := range list {
		if _, isNum := e.(json.Number); !isNum {
			n++
		}
	}
	return max(1, n)
}

func gemini(o map[string]any) float64 {
	var out float64
	for _, k := range []string{"generationConfig", "generation_config"} {
		if gc, ok := o[k].(map[string]any); ok {
			out = max(out, first(num(gc["maxOutputTokens"]), num(gc["max_output_tokens"]))*
				max(1, num(gc["candidateCount"]), num(gc["candidate_count"])))
		}
	}
	return out
}

// validJSON reports whether encoding/json or Python would read body as JSON.
func validJSON(body []byte) bool {
	return json.Valid(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
}

func TestProviderReadsModel(t *testing.T) {
	got, ok := providerReads(fuzzPaths[1], []byte(`{"prompt":["a","b",[1]],"max_tokens":10,"n":2}`))
	if want := int64(60); !ok || got != want {
		t.Errorf("providerReads(completions batch) = %d, %v, want %d", got, ok, want)
	}
	got, ok = providerReads(fuzzPaths[7], []byte("\xef\xbb\xbf"+`{"requests":[{"generationConfig":{"maxOutputTokens":5}},{"generation_config":{"max_output_tokens":"7","candidate_count":2}}]}`))
	if want := int64(19); !ok || got != want {
		t.Errorf("providerReads(gemini batch) = %d, %v, want %d", got, ok, want)
	}
}
