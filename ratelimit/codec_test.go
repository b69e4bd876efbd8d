package ratelimit

import (
	"context"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/leakytokens/leaky/internal/contract"
)

// rawCodec sends pre-encoded bytes, as a C++ client may: proto3 strings
// with invalid UTF-8, which Go's own encoder refuses to produce.
type rawCodec struct{ lenientCodec }

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return lenientCodec{}.Marshal(v)
}

// wireRequest encodes a RateLimitRequest by hand: domain, one descriptor
// with the given entries, hits_addend.
func wireRequest(domain string, hits uint64, entries ...[2]string) []byte {
	var d []byte
	for _, e := range entries {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, e[0])
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, e[1])
		d = protowire.AppendTag(d, 1, protowire.BytesType)
		d = protowire.AppendBytes(d, entry)
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, domain)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, d)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, hits)
	return b
}

// Invalid UTF-8 in a descriptor value is decided, not refused with
// INTERNAL (which a fail-open Envoy would let through unlimited), and two
// different invalid values get two different buckets.
func TestInvalidUTF8ValuesAreDecided(t *testing.T) {
	s := start(t, testConfig(t, "memory", "policy.yaml"))
	conn, err := grpc.NewClient(s.svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(user string, hits uint64) *rlsv3.RateLimitResponse {
		t.Helper()
		req := wireRequest(contract.Domain, hits, [2]string{contract.KeyProvider, "openai"}, [2]string{contract.KeyTier, "free"}, [2]string{contract.KeyUser, user})
		resp := &rlsv3.RateLimitResponse{}
		if err := conn.Invoke(context.Background(), "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", &req, resp); err != nil {
			t.Fatalf("ShouldRateLimit with user %q: %v", user, err)
		}
		return resp
	}
	if r := call("\xff\xfe", 1000); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("first: %v", r.OverallCode)
	}
	if r := call("\xff\xfe", 1); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("same invalid user again: %v, want OVER_LIMIT", r.OverallCode)
	}
	if r := call("\xff\xfd", 1); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Errorf("another invalid user: %v, want OK (a bucket of its own)", r.OverallCode)
	}
}

func TestEscapeInvalid(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "a\xffb": `a\xffb`, "é\xc3": `é\xc3`} {
		if got := escapeInvalid([]byte(in)); got != want {
			t.Errorf("escapeInvalid(%q) = %q, want %q", in, got, want)
		}
	}
}
