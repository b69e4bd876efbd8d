package ratelimit

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// lenientCodec is the gRPC server codec. It decodes like the standard proto
// codec, except that a string field holding invalid UTF-8 — which Envoy
// forwards from raw header bytes, and which the standard codec refuses with
// INTERNAL, so that a fail-open Envoy would let the request through
// unlimited — is accepted with its invalid bytes escaped as \xNN. Distinct
// invalid values stay distinct from each other, so they get buckets of their
// own; a valid value spelling the escape (the text \xff) shares the bucket of
// the byte it spells. A descriptor entry's key is not laundered: the codec
// escapes it too (the message could not hold it otherwise) but marks the
// entry (keyEscaped), and the service refuses it with INVALID_ARGUMENT.
type lenientCodec struct{}

// entryKeyField is the descriptor entry's key, the one string field an
// invalid byte makes the request invalid rather than escaped.
const entryKeyField protoreflect.FullName = "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry.key"

// escapedKeyMark is the field number of the unknown field the codec adds
// to an entry whose key it escaped: the highest valid number, which no
// version of the proto will use. An entry that arrives with it is refused
// like one with an invalid key.
const escapedKeyMark = protowire.MaxValidNumber

// keyEscaped reports whether the codec escaped e's key (it held invalid
// UTF-8).
func keyEscaped(e protoreflect.ProtoMessage) bool {
	b := e.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return false
		}
		if num == escapedKeyMark && typ == protowire.VarintType {
			return true
		}
		b = b[n:]
	}
	return false
}

func (lenientCodec) Name() string { return "proto" }

func (lenientCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal: %T is not a proto message", v)
	}
	return proto.Marshal(m)
}

func (lenientCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a proto message", v)
	}
	err := proto.Unmarshal(data, m)
	if err == nil {
		return nil
	}
	fixed, ferr := escapeStrings(data, m.ProtoReflect().Descriptor(), 0)
	if ferr != nil {
		return err
	}
	return proto.Unmarshal(fixed, m)
}

// maxDepth bounds the recursion of escapeStrings on nested messages.
const maxDepth = 32

// escapeStrings rewrites a message's wire bytes so that every string field,
// in nested messages too, is valid UTF-8.
func escapeStrings(b []byte, md protoreflect.MessageDescriptor, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	out := make([]byte, 0, len(b))
	keyMarked := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		field := b[:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			out = append(out, field...)
			continue
		}
		val, _ := protowire.ConsumeBytes(field[n:])
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(val):
			val = []byte(escapeInvalid(val))
			keyMarked = keyMarked || fd.FullName() == entryKeyField
		case fd.Kind() == protoreflect.MessageKind:
			fixed, err := escapeStrings(val, fd.Message(), depth+1)
			if err != nil {
				return nil, err
			}
			val = fixed
		}
		out = protowire.AppendTag(out, num, typ)
		out = protowire.AppendBytes(out, val)
	}
	if keyMarked {
		out = protowire.AppendTag(out, escapedKeyMark, protowire.VarintType)
		out = protowire.AppendVarint(out, 1)
	}
	return out, nil
}

// escapeInvalid keeps the valid runes of b and writes each invalid byte as
// \xNN.
func escapeInvalid(b []byte) string {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = append(out, `\x`...)
			out = append(out, strconv.FormatUint(uint64(b[0])>>4, 16)...)
			out = append(out, strconv.FormatUint(uint64(b[0])&15, 16)...)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}
