package contract

import (
	"fmt"
	"strconv"
)

// Request is what the contract knows of one LLM request once authz has
// admitted it: the values of the headers authz set. An empty field is an
// absent header.
type Request struct {
	Provider string // HeaderProvider
	Tier     string // HeaderTier
	User     string // HeaderUserID
	Org      string // HeaderOrgID: only when the caller is a member
	Estimate int64  // HeaderEstimate, tokens; 0 when absent
}

// FromHeaders reads a Request from the headers authz set, get returning a
// header's value by its lower-case name ("" when absent), as Envoy's
// rate-limit actions read them. An estimate that is not a non-negative
// decimal integer is an error.
func FromHeaders(get func(name string) string) (Request, error) {
	r := Request{
		Provider: get(HeaderProvider),
		Tier:     get(HeaderTier),
		User:     get(HeaderUserID),
		Org:      get(HeaderOrgID),
	}
	if v := get(HeaderEstimate); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Request{}, fmt.Errorf("%s %q: want a non-negative whole number of tokens", HeaderEstimate, v)
		}
		r.Estimate = n
	}
	return r, nil
}

// Hits is what each of the request's buckets is charged: the estimate, at
// least 1, as a request hits_addend of 0 counts as 1.
func (r Request) Hits() int64 { return max(1, r.Estimate) }

// Descriptors returns the descriptors Envoy builds from r's headers, in
// order, each a list of entries in the order Envoy's actions append them:
//
//	(provider,P)(tier,T)(user,U)  the user's bucket
//	(provider,P)(org,O)           the organisation's pool, only when Org is set
//	(provider,P)                  the provider's pool
//
// As with Envoy's request_headers action, a descriptor one of whose headers
// is absent is not built at all: without a provider there is none.
func (r Request) Descriptors() [][]Entry {
	if r.Provider == "" {
		return nil
	}
	out := make([][]Entry, 0, 3)
	if r.Tier != "" && r.User != "" {
		out = append(out, []Entry{{KeyProvider, r.Provider}, {KeyTier, r.Tier}, {KeyUser, r.User}})
	}
	if r.Org != "" {
		out = append(out, []Entry{{KeyProvider, r.Provider}, {KeyOrg, r.Org}})
	}
	return append(out, []Entry{{KeyProvider, r.Provider}})
}
