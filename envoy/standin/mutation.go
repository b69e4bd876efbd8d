package standin

import (
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerOp is one header mutation, as Envoy applies a HeaderValueOption.
type headerOp struct {
	key, value string
	action     appendAction
}

// appendAction is what a headerOp does to the header it names.
type appendAction int

const (
	addValue          appendAction = iota // APPEND_IF_EXISTS_OR_ADD: one more value
	joinValue                             // the deprecated append on a request header: joined to the first value by ","
	addIfAbsent                           // ADD_IF_ABSENT: only when the header is missing
	overwriteIfExists                     // OVERWRITE_IF_EXISTS: only when the header is there
	setValue                              // OVERWRITE_IF_EXISTS_OR_ADD: the only value
)

// headerOpOf is o as Envoy's ext_authz filter applies it to the upstream
// request (request true) or to the client's response. With the deprecated
// append set, true appends (joined by "," to a request header's first
// value; another header of a response) and false overwrites. Unset,
// append_action decides, and its default is APPEND_IF_EXISTS_OR_ADD. An
// action Envoy does not know overwrites, as in Envoy.
func headerOpOf(o *corev3.HeaderValueOption, request bool) headerOp {
	op := headerOp{key: o.GetHeader().GetKey(), value: o.GetHeader().GetValue(), action: setValue}
	//lint:ignore SA1019 Envoy v1.40 still honours the deprecated append, over append_action.
	legacy := o.GetAppend()
	switch {
	case legacy != nil && legacy.GetValue() && request:
		op.action = joinValue
	case legacy != nil && legacy.GetValue():
		op.action = addValue
	case legacy != nil:
		op.action = setValue
	case o.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		op.action = addValue
	case o.GetAppendAction() == corev3.HeaderValueOption_ADD_IF_ABSENT:
		op.action = addIfAbsent
	case o.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		op.action = overwriteIfExists
	}
	return op
}

// apply makes the mutation on h.
func (op headerOp) apply(h http.Header) {
	k := http.CanonicalHeaderKey(op.key)
	exists := len(h[k]) > 0
	switch op.action {
	case addValue:
		h[k] = append(h[k], op.value)
	case joinValue:
		if exists {
			h[k][0] += "," + op.value
		} else {
			h[k] = []string{op.value}
		}
	case addIfAbsent:
		if !exists {
			h[k] = []string{op.value}
		}
	case overwriteIfExists:
		if exists {
			h[k] = []string{op.value}
		}
	default:
		h[k] = []string{op.value}
	}
}

// applyOps makes every mutation on h, in order.
func applyOps(h http.Header, ops []headerOp) {
	for _, op := range ops {
		op.apply(h)
	}
}
