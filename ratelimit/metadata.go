package ratelimit

import (
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// withDynamicMetadata sets resp.DynamicMetadata, when the service is
// configured to (ResponseDynamicMetadata), in envoyproxy/ratelimit's shape,
// which Envoy stores under the namespace envoy.filters.http.ratelimit:
//
//	domain       the request's domain
//	descriptors  one struct per request descriptor, in order: entries, a
//	             list of "key=value"; limit, the request's override as
//	             text, only when it has one; hitsAddend, only when the
//	             descriptor sets its own
//	hitsAddend   the request's hits_addend, only when not 0
//	metadata     the metadata of the rules matched by the descriptors that
//	             passed (answered OK, unlimited ones excepted), merged in
//	             request order: the first value of a key wins, except that
//	             two structs under one key are merged likewise; only when
//	             not empty
//
// It returns resp.
func (s *Service) withDynamicMetadata(req *rlsv3.RateLimitRequest, plans []plan, resp *rlsv3.RateLimitResponse) *rlsv3.RateLimitResponse {
	if s.cfg.ResponseDynamicMetadata {
		resp.DynamicMetadata = dynamicMetadata(req, plans, resp.GetStatuses())
	}
	return resp
}

// dynamicMetadata builds the struct withDynamicMetadata describes; statuses
// are the answer's, index for index with plans and the request's
// descriptors.
func dynamicMetadata(req *rlsv3.RateLimitRequest, plans []plan, statuses []*rlsv3.RateLimitResponse_DescriptorStatus) *structpb.Struct {
	descs := make([]*structpb.Value, len(req.GetDescriptors()))
	merged := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i, d := range req.GetDescriptors() {
		entries := make([]*structpb.Value, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			entries[j] = structpb.NewStringValue(e.GetKey() + "=" + e.GetValue())
		}
		f := map[string]*structpb.Value{"entries": structpb.NewListValue(&structpb.ListValue{Values: entries})}
		if o := d.GetLimit(); o != nil {
			f["limit"] = structpb.NewStringValue(o.String())
		}
		if h := d.GetHitsAddend(); h != nil {
			f["hitsAddend"] = structpb.NewNumberValue(float64(h.GetValue()))
		}
		descs[i] = structpb.NewStructValue(&structpb.Struct{Fields: f})
		if i < len(plans) && i < len(statuses) && plans[i].metadata != nil && !plans[i].unlimited &&
			statuses[i].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
			mergeFirstWins(merged, plans[i].metadata)
		}
	}
	out := map[string]*structpb.Value{
		"domain":      structpb.NewStringValue(req.GetDomain()),
		"descriptors": structpb.NewListValue(&structpb.ListValue{Values: descs}),
	}
	if h := req.GetHitsAddend(); h != 0 {
		out["hitsAddend"] = structpb.NewNumberValue(float64(h))
	}
	if len(merged.Fields) > 0 {
		out["metadata"] = structpb.NewStructValue(merged)
	}
	return &structpb.Struct{Fields: out}
}

// mergeFirstWins adds src's fields to dst: a key dst lacks is copied, a key
// both hold as structs is merged recursively, any other key keeps dst's
// value. src (a rule's metadata, shared) is never modified: what dst takes
// from it is cloned.
func mergeFirstWins(dst, src *structpb.Struct) {
	for k, v := range src.GetFields() {
		cur, ok := dst.Fields[k]
		switch {
		case !ok:
			dst.Fields[k] = proto.Clone(v).(*structpb.Value)
		case cur.GetStructValue() != nil && v.GetStructValue() != nil:
			mergeFirstWins(cur.GetStructValue(), v.GetStructValue())
		}
	}
}
