package xdsconfig

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
)

// RuntimeType is the type URL of the Runtime (RTDS) resource the
// subscriber asks for (envoy.service.runtime.v3.Runtime).
const RuntimeType = "type.googleapis.com/envoy.service.runtime.v3.Runtime"

// decodeFiles finds the Runtime named model.RuntimeName in resp and returns
// the files of its layer's model.RuntimeFilesField, by name. Every other
// shape is an error naming what is wrong, for the NACK: a resource that is
// not a Runtime, a Runtime that does not decode, two of that name, none,
// a layer without the files field, a files field that is not a struct, a
// file whose value is not a string.
func decodeFiles(resp *discoveryv3.DiscoveryResponse) (map[string][]byte, error) {
	var found *runtimev3.Runtime
	for i, a := range resp.GetResources() {
		if a.GetTypeUrl() != RuntimeType {
			return nil, fmt.Errorf("resource %d: type %q, want %s", i, a.GetTypeUrl(), RuntimeType)
		}
		rt := &runtimev3.Runtime{}
		if err := proto.Unmarshal(a.GetValue(), rt); err != nil {
			return nil, fmt.Errorf("resource %d: not a Runtime: %w", i, err)
		}
		if rt.GetName() != model.RuntimeName {
			continue // another runtime layer: not ours
		}
		if found != nil {
			return nil, fmt.Errorf("two Runtime resources named %s", model.RuntimeName)
		}
		found = rt
	}
	if found == nil {
		return nil, fmt.Errorf("no Runtime resource named %s in the response", model.RuntimeName)
	}
	if found.GetLayer() == nil {
		return nil, fmt.Errorf("runtime %s: no layer", model.RuntimeName)
	}
	return layerFiles(found.GetLayer())
}

// layerFiles reads {RuntimeFilesField: {name: text, …}} from a Runtime's
// layer.
func layerFiles(layer *structpb.Struct) (map[string][]byte, error) {
	v, ok := layer.GetFields()[model.RuntimeFilesField]
	if !ok {
		return nil, fmt.Errorf("runtime %s: the layer has no field %q", model.RuntimeName, model.RuntimeFilesField)
	}
	st := v.GetStructValue()
	if st == nil {
		return nil, fmt.Errorf("runtime %s: field %q is not a struct of file name to text", model.RuntimeName, model.RuntimeFilesField)
	}
	if len(st.GetFields()) == 0 {
		return nil, fmt.Errorf("runtime %s: field %q holds no files", model.RuntimeName, model.RuntimeFilesField)
	}
	files := make(map[string][]byte, len(st.GetFields()))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(st.GetFields())) {
		s, ok := st.GetFields()[name].GetKind().(*structpb.Value_StringValue)
		if !ok {
			errs = append(errs, fmt.Errorf("runtime %s: file %q: the value is not a string", model.RuntimeName, name))
			continue
		}
		files[name] = []byte(s.StringValue)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return files, nil
}
