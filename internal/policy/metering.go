package policy

// Metering is the policy's optional metering section: what the ratelimit
// service's ext_proc processor may change in a provider request so that
// the response reports its real usage. Parse fills every field the file
// leaves out with DefaultMetering's value. Both fields are booleans, which
// the YAML decoder already refuses to read from anything else, so the
// section has no further rule to validate.
type Metering struct {
	// ClampMaxTokens lowers (never raises) a request's completion limit —
	// max_tokens, max_completion_tokens, Gemini's maxOutputTokens — to the
	// completion part of its estimate, and sets it when the request has
	// none, so the provider cannot answer with more than was reserved.
	ClampMaxTokens bool `yaml:"clamp_max_tokens"`
	// ForceStreamUsage adds stream_options.include_usage: true to an
	// OpenAI or Qwen streaming chat or completion request that lacks it, so
	// the stream ends with its real usage; the processor removes that usage
	// chunk from what the client receives.
	ForceStreamUsage bool `yaml:"force_stream_usage"`
}

// DefaultMetering is the metering section of a policy that has none: no
// clamping, usage forced on streams.
func DefaultMetering() Metering {
	return Metering{ClampMaxTokens: false, ForceStreamUsage: true}
}
