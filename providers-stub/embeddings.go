package providersstub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
)

// OpenAI's embeddings API, POST /v1/embeddings: an input string or array
// of them (or of token arrays), one unit vector per input, a deterministic
// function of it.

type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

// defaultDimensions is a vector's length when the request does not say;
// maxDimensions bounds what it may ask for.
const (
	defaultDimensions = 16
	maxDimensions     = 4096
)

type embedding struct {
	Object    string `json:"object"` // embedding
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

func serveEmbeddings(c *call, body []byte) {
	var req embeddingsRequest
	if e := c.decode(body, &req); e != nil {
		c.fail(*e)
		return
	}
	inputs, prompt, e := req.validate()
	if e != nil {
		c.fail(*e)
		return
	}
	dims := defaultDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
	}
	data := make([]embedding, len(inputs))
	for i, in := range inputs {
		v := vector(in, dims)
		data[i] = embedding{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 0, 4*len(v))
			for _, f := range v {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	resp := map[string]any{"object": "list", "data": data, "model": req.Model}
	if u, ok := c.report(usage{prompt: prompt}); ok {
		resp["usage"] = map[string]int64{"prompt_tokens": u.prompt, "total_tokens": u.total()}
	}
	c.writeJSON(resp)
}

// validate checks the request and returns its inputs (each as the text
// its vector is a function of) and their prompt tokens: a string's by the
// counting rule, a token array's its length.
func (r embeddingsRequest) validate() ([]string, int64, *apiError) {
	fail := func(e apiError) ([]string, int64, *apiError) { return nil, 0, &e }
	switch {
	case r.Model == "":
		return fail(invalid("model", "", "you must provide a model parameter"))
	case r.Dimensions != nil && (*r.Dimensions < 1 || *r.Dimensions > maxDimensions):
		return fail(invalid("dimensions", "invalid_value", "Invalid 'dimensions': expected a value from 1 to %d.", maxDimensions))
	case r.EncodingFormat != "" && r.EncodingFormat != "float" && r.EncodingFormat != "base64":
		return fail(invalid("encoding_format", "invalid_value", "Invalid 'encoding_format': expected 'float' or 'base64'."))
	case len(r.Input) == 0 || string(r.Input) == "null":
		return fail(invalid("input", "missing_required_parameter", "Missing required parameter: 'input'."))
	}
	if texts, ok := stringOrStrings(r.Input); ok && len(texts) > 0 {
		return texts, promptTokens(texts), nil
	}
	var one []int64
	if json.Unmarshal(r.Input, &one) == nil && len(one) > 0 {
		return []string{string(marshal(one))}, int64(len(one)), nil
	}
	var many [][]int64
	if json.Unmarshal(r.Input, &many) == nil && len(many) > 0 {
		out, n := make([]string, len(many)), int64(0)
		for i, t := range many {
			if len(t) == 0 {
				return fail(invalid("input", "invalid_value", "Invalid 'input': a token array is empty."))
			}
			out[i], n = string(marshal(t)), n+int64(len(t))
		}
		return out, n, nil
	}
	return fail(invalid("input", "invalid_type", "Invalid 'input': expected a string, an array of strings or an array of token arrays, not empty."))
}

// vector is a unit vector of dims components, a function of text.
func vector(text string, dims int) []float32 {
	rng := seeded(text)
	v := make([]float64, dims)
	var norm float64
	for i := range v {
		v[i] = rng.Float64()*2 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		v[0], norm = 1, 1
	}
	out := make([]float32, dims)
	for i := range v {
		out[i] = float32(v[i] / norm)
	}
	return out
}
