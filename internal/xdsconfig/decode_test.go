package xdsconfig

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leakytokens/leaky/controlplane/model"
	"github.com/leakytokens/leaky/internal/xdsconfig/xdstest"
)

func TestRuntimeTypeIsTheProtoName(t *testing.T) {
	want := "type.googleapis.com/" + string((&runtimev3.Runtime{}).ProtoReflect().Descriptor().FullName())
	if RuntimeType != want {
		t.Errorf("RuntimeType = %q, want %q", RuntimeType, want)
	}
}

func anyOf(t *testing.T, typeURL string, m proto.Message) *anypb.Any {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}
}

func runtimeWith(t *testing.T, name string, layer map[string]any) *runtimev3.Runtime {
	t.Helper()
	s, err := structpb.NewStruct(layer)
	if err != nil {
		t.Fatal(err)
	}
	return &runtimev3.Runtime{Name: name, Layer: s}
}

// Every shape of response has an answer: the files, or an error that
// names the problem (the NACK's text); none panics.
func TestDecodeFiles(t *testing.T) {
	good := xdstest.Runtime(map[string]string{"policy.yaml": "domain: leaky-tokens\n", "rl.yaml": "domain: d\n"})
	files := map[string]any{"a.yaml": "domain: a\n"}
	tests := []struct {
		name    string
		res     func(t *testing.T) []*anypb.Any
		want    map[string]string
		wantErr string
	}{
		{"the runtime", func(t *testing.T) []*anypb.Any { return []*anypb.Any{anyOf(t, RuntimeType, good)} },
			map[string]string{"policy.yaml": "domain: leaky-tokens\n", "rl.yaml": "domain: d\n"}, ""},
		{"ours among other layers", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, "other", map[string]any{"x": 1.0})), anyOf(t, RuntimeType, good)}
		}, map[string]string{"policy.yaml": "domain: leaky-tokens\n", "rl.yaml": "domain: d\n"}, ""},
		{"no resources", func(t *testing.T) []*anypb.Any { return nil }, nil, "no Runtime resource named leaky-tokens"},
		{"only another layer", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, "other", map[string]any{model.RuntimeFilesField: files}))}
		}, nil, "no Runtime resource named leaky-tokens"},
		{"wrong type inside", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, "type.googleapis.com/envoy.config.cluster.v3.Cluster", &clusterv3.Cluster{Name: model.RuntimeName})}
		}, nil, `resource 0: type "type.googleapis.com/envoy.config.cluster.v3.Cluster", want ` + RuntimeType},
		{"bytes that are no runtime", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{{TypeUrl: RuntimeType, Value: []byte{0x0a, 0xff, 0xff}}}
		}, nil, "resource 0: not a Runtime"},
		{"two of ours", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, good), anyOf(t, RuntimeType, good)}
		}, nil, "two Runtime resources named leaky-tokens"},
		{"no layer", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, &runtimev3.Runtime{Name: model.RuntimeName})}
		}, nil, "runtime leaky-tokens: no layer"},
		{"no files field", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, model.RuntimeName, map[string]any{"other": files}))}
		}, nil, `the layer has no field "files"`},
		{"files a string", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, model.RuntimeName, map[string]any{model.RuntimeFilesField: "domain: x"}))}
		}, nil, `field "files" is not a struct`},
		{"files empty", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, model.RuntimeName, map[string]any{model.RuntimeFilesField: map[string]any{}}))}
		}, nil, `field "files" holds no files`},
		{"a file that is no string", func(t *testing.T) []*anypb.Any {
			return []*anypb.Any{anyOf(t, RuntimeType, runtimeWith(t, model.RuntimeName, map[string]any{model.RuntimeFilesField: map[string]any{
				"a.yaml": "domain: a\n", "b.yaml": 42.0, "c.yaml": map[string]any{"domain": "c"}}}))}
		}, nil, `file "b.yaml": the value is not a string` + "\n" + `runtime leaky-tokens: file "c.yaml": the value is not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeFiles(&discoveryv3.DiscoveryResponse{TypeUrl: RuntimeType, Resources: tt.res(t)})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeFiles = %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeFiles: %v", err)
			}
			gotText := map[string]string{}
			for k, v := range got {
				gotText[k] = string(v)
			}
			if diff := cmp.Diff(tt.want, gotText); diff != "" {
				t.Errorf("decodeFiles (-want +got):\n%s", diff)
			}
		})
	}
}
