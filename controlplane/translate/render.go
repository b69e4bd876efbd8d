package translate

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// JSON renders m as protojson (proto field names, every Any with its
// "@type"), indented by two spaces with the keys of every object sorted, so
// the same message always renders to the same bytes.
func JSON(m proto.Message) ([]byte, error) {
	v, err := plain(m)
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("translate: render json: %w", err)
	}
	return append(out, '\n'), nil
}

// YAML renders m as JSON does, in YAML: what Envoy reads with -c.
func YAML(m proto.Message) ([]byte, error) {
	v, err := plain(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("translate: render yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("translate: render yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// plain is m's protojson as maps, slices and scalars; whole JSON numbers
// become int64 so YAML writes them without an exponent.
func plain(m proto.Message) (any, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("translate: render %T: %w", m, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("translate: render %T: %w", m, err)
	}
	return numbers(v), nil
}

// numbers replaces every json.Number in v by an int64 or a float64.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	}
	return v
}
