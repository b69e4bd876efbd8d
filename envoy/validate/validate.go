// Package validate checks Envoy configuration offline, where no Envoy binary
// can run it (envoy --mode validate): the bootstrap files under envoy/ and
// every resource the control plane generates. It is strict where protojson
// and Envoy's proto rules are: an unknown field is an error, every Any
// (typed_config, typed_per_filter_config, …) must hold a type this package
// knows (an unknown type URL is an error naming it), and the proto
// validation rules (protoc-gen-validate's ValidateAll) apply to the whole
// message and, as protoc-gen-validate does not descend into an Any, to the
// message inside each Any too.
//
// It checks what the protos say, not what only Envoy's C++ knows (a route
// to an undefined cluster, a filter name that does not match its type).
package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"gopkg.in/yaml.v3"
)

// Bootstrap checks an Envoy bootstrap written in YAML or JSON (JSON is
// YAML): one document, read strictly into the v3 Bootstrap, then Resource.
func Bootstrap(yamlOrJSON []byte) error {
	data, err := toJSON(yamlOrJSON)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	r, err := resolver()
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{Resolver: r}).Unmarshal(data, &b); err != nil {
		return fmt.Errorf("validate: bootstrap: %w", err)
	}
	if err := check(&b, r); err != nil {
		return fmt.Errorf("validate: bootstrap: %w", err)
	}
	return nil
}

// Resource checks one message (a bootstrap, a listener, a cluster, any xDS
// resource): its validation rules, then each Any it holds, unpacked and
// checked the same way, recursively. Every problem is reported, each
// naming the field path where it was found.
func Resource(m proto.Message) error {
	r, err := resolver()
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	if err := check(m, r); err != nil {
		return fmt.Errorf("validate: %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// maxAnyDepth bounds Anys inside Anys, against a configuration that nests
// them without end.
const maxAnyDepth = 32

// check applies m's validation rules and checks every Any inside it.
func check(m proto.Message, r *protoregistry.Types) error {
	w := walker{r: r}
	w.message(m, "", 0)
	return errors.Join(w.errs...)
}

type walker struct {
	r    *protoregistry.Types
	errs []error
}

// message validates m (found at path, depth Anys deep) with its own rules,
// which cover every field but the insides of Anys, then walks it for Anys.
func (w *walker) message(m proto.Message, path string, depth int) {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			w.errs = append(w.errs, at(path, err))
		}
	}
	w.fields(m.ProtoReflect(), path, depth)
}

// fields walks the set fields of msg for Anys and unknown fields.
func (w *walker) fields(msg protoreflect.Message, path string, depth int) {
	if len(msg.GetUnknown()) > 0 {
		w.errs = append(w.errs, at(path, errors.New("unknown fields")))
	}
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := join(path, string(fd.Name()))
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				w.value(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), depth)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				w.value(mv.Message(), fmt.Sprintf("%s[%q]", p, k.String()), depth)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			w.value(v.Message(), p, depth)
		}
		return true
	})
}

// value checks a message-typed value: an Any is unpacked and checked as a
// message of its own; anything else is walked (its rules already ran with
// its parent's).
func (w *walker) value(msg protoreflect.Message, path string, depth int) {
	if msg.Descriptor().FullName() != "google.protobuf.Any" {
		w.fields(msg, path, depth)
		return
	}
	fields := msg.Descriptor().Fields()
	url := msg.Get(fields.ByName("type_url")).String()
	if depth >= maxAnyDepth {
		w.errs = append(w.errs, at(path, fmt.Errorf("more than %d Anys nested", maxAnyDepth)))
		return
	}
	mt, err := w.r.FindMessageByURL(url)
	if err != nil {
		w.errs = append(w.errs, at(path, fmt.Errorf("unknown type URL %q", url)))
		return
	}
	inner := mt.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: w.r}).Unmarshal(msg.Get(fields.ByName("value")).Bytes(), inner); err != nil {
		w.errs = append(w.errs, at(path, fmt.Errorf("%s: %w", url, err)))
		return
	}
	w.message(inner, path+"("+string(mt.Descriptor().FullName())+")", depth+1)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func at(path string, err error) error {
	if path == "" {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}

// toJSON reads one YAML (or JSON) document into JSON.
func toJSON(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, err
	}
	var more any
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	j, err := jsonValue(v, "")
	if err != nil {
		return nil, err
	}
	return json.Marshal(j)
}

// jsonValue turns what YAML decodes into what encoding/json writes as the
// same JSON: mappings with string keys only, NaN and the infinities as the
// strings protojson reads, timestamps as RFC 3339 text.
func jsonValue(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			j, err := jsonValue(e, join(path, k))
			if err != nil {
				return nil, err
			}
			x[k] = j
		}
		return x, nil
	case map[any]any:
		return nil, at(path, errors.New("a mapping key that is not a string"))
	case []any:
		for i, e := range x {
			j, err := jsonValue(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			x[i] = j
		}
		return x, nil
	case float64:
		switch {
		case math.IsNaN(x):
			return "NaN", nil
		case math.IsInf(x, 1):
			return "Infinity", nil
		case math.IsInf(x, -1):
			return "-Infinity", nil
		}
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	}
	return v, nil
}
