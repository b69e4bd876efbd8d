// Package providersstub serves fake LLM providers for development and
// tests: OpenAI, Gemini and Qwen (DashScope's OpenAI-compatible mode), each
// on its own address, in the provider's own wire format, plus the seed's
// POST /api/v1/{provider}/chat.
//
// Answers are deterministic: the generated text is a function of the
// prompt and the requested length, and usage is counted from the texts by
// one rule (a text of n bytes is ⌈n/4⌉ tokens; a prompt is the sum over
// its texts, at least 1). Only ids and creation times differ between two
// answers to the same request. Knobs (flags for every request, x-stub-*
// headers for one) add latency, time to first token, errors, truncated
// streams and wrong usage, for testing what sits in front of a provider.
package providersstub

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// The providers the stub serves, as the policy names them.
const (
	OpenAI = "openai"
	Gemini = "gemini"
	Qwen   = "qwen"
)

// Config is the stub's configuration. Start from DefaultConfig.
type Config struct {
	// OpenAIAddr, GeminiAddr and QwenAddr are the providers' listen
	// addresses (host:port; port 0 picks a free one). Empty: that provider
	// is not served.
	OpenAIAddr, GeminiAddr, QwenAddr string
	// Knobs apply to every request; a request's x-stub-* headers override
	// them for that request.
	Knobs Knobs
	// CompletionTokens is the length of a generated text, in tokens, when
	// the request's own limit (max_tokens, maxOutputTokens) is not lower.
	CompletionTokens int
	// MaxBodyBytes bounds a request body; a larger one gets the provider's
	// error (413 from OpenAI and Qwen, 400 from Gemini).
	MaxBodyBytes int64
	// ErrorSeed seeds the draws of Knobs.ErrorRate.
	ErrorSeed uint64
	// FailFirstMemory is how many requests the fail-first knob remembers
	// attempts of; beyond it the request seen first is forgotten.
	FailFirstMemory int
	// ShutdownGrace bounds the graceful stop: requests still open then
	// (a long stream, a long delay) are cut.
	ShutdownGrace time.Duration
}

// DefaultConfig returns the defaults: every provider on its port of DESIGN
// §2 on loopback, no knob set but a 1 s Retry-After.
func DefaultConfig() Config {
	return Config{
		OpenAIAddr:       "127.0.0.1:8093",
		GeminiAddr:       "127.0.0.1:8092",
		QwenAddr:         "127.0.0.1:8091",
		Knobs:            Knobs{RetryAfter: 1},
		CompletionTokens: 32,
		MaxBodyBytes:     4 << 20,
		ErrorSeed:        1,
		FailFirstMemory:  4096,
		ShutdownGrace:    5 * time.Second,
	}
}

// RegisterFlags adds a flag for every field to fs, with c's current values
// as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.OpenAIAddr, "openai-addr", c.OpenAIAddr, "OpenAI stub listen address (empty: not served)")
	fs.StringVar(&c.GeminiAddr, "gemini-addr", c.GeminiAddr, "Gemini stub listen address (empty: not served)")
	fs.StringVar(&c.QwenAddr, "qwen-addr", c.QwenAddr, "Qwen (DashScope compatible mode) stub listen address (empty: not served)")
	c.Knobs.RegisterFlags(fs)
	fs.IntVar(&c.CompletionTokens, "completion-tokens", c.CompletionTokens, "length of a generated text, in tokens, unless the request asks for fewer")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest request body accepted, in bytes")
	fs.Uint64Var(&c.ErrorSeed, "error-seed", c.ErrorSeed, "seed of the -error-rate draws")
	fs.IntVar(&c.FailFirstMemory, "fail-first-memory", c.FailFirstMemory, "how many requests -fail-first remembers")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "bound on the graceful stop")
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	if err := c.Knobs.Validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.OpenAIAddr != "" || c.GeminiAddr != "" || c.QwenAddr != "", "-openai-addr, -gemini-addr, -qwen-addr: at least one provider must be served")
	check(c.CompletionTokens >= 1 && c.CompletionTokens <= 100_000, "-completion-tokens: from 1 to 100000")
	check(c.MaxBodyBytes >= 1<<10, fmt.Sprintf("-max-body-bytes: at least %d", 1<<10))
	check(c.FailFirstMemory >= 1 && c.FailFirstMemory <= 1<<20, "-fail-first-memory: from 1 to 1048576")
	check(c.ShutdownGrace > 0, "-shutdown-grace: must be positive")
	return errors.Join(errs...)
}

// addrs returns the configured address of every provider served.
func (c Config) addrs() map[string]string {
	out := map[string]string{}
	for p, a := range map[string]string{OpenAI: c.OpenAIAddr, Gemini: c.GeminiAddr, Qwen: c.QwenAddr} {
		if a != "" {
			out[p] = a
		}
	}
	return out
}
