package providersstub

import (
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Knobs shape the stub's answers. Each is a flag (Config.Knobs, the default
// for every request) and a request header that overrides it for one
// request: flag -latency, header x-stub-latency. The zero value answers at
// once, correctly, every time.
type Knobs struct {
	// Latency delays the answer's headers (every API).
	Latency time.Duration
	// TTFT delays a stream's first chunk, after the headers.
	TTFT time.Duration
	// ChunkDelay separates a stream's chunks.
	ChunkDelay time.Duration
	// ErrorRate is the fraction of requests answered 500, drawn from a
	// generator seeded by Config.ErrorSeed (0 to 1).
	ErrorRate float64
	// Status, when not 0, answers every request with this status (400 to
	// 599) in the provider's error shape.
	Status int
	// RetryAfter is the Retry-After of a 429, in seconds.
	RetryAfter int
	// FailFirst answers the first FailFirst attempts of a request 503; the
	// attempts of one request share its x-request-id (or, without one, its
	// method, path and body).
	FailFirst int
	// Truncate, when not 0, cuts a stream after its first Truncate chunks
	// (SSE data events, [DONE] included; JSON array elements) by aborting
	// the connection, so neither the final usage nor the end arrives. A
	// stream with no more chunks than that is sent whole.
	Truncate int
	// Usage is what the answers report as usage: UsageNormal (also ""),
	// UsageMissing, UsageAbsurd or UsageNegative.
	Usage string
}

// The values of Knobs.Usage.
const (
	UsageNormal   = "normal"   // the counted usage
	UsageMissing  = "missing"  // no usage at all (no usage field, chunk or usageMetadata)
	UsageAbsurd   = "absurd"   // 10^12 prompt and 10^12 completion tokens
	UsageNegative = "negative" // -1 prompt and -1 completion tokens
)

// HeaderPrefix begins every knob's header: x-stub-<flag name>.
const HeaderPrefix = "x-stub-"

// maxDelay bounds every delay knob, so one request cannot hold a handler
// for long.
const maxDelay = 10 * time.Minute

// knob is one field of Knobs as a flag and a header.
type knob struct {
	name  string // the flag's name; the header is HeaderPrefix+name
	usage string
	get   func(k *Knobs) string
	set   func(k *Knobs, v string) error // parses and bounds v
}

// knobs lists every knob, in flag order.
func knobs() []knob {
	return []knob{
		delayKnob("latency", "delay before an answer's headers", func(k *Knobs) *time.Duration { return &k.Latency }),
		delayKnob("ttft", "delay before a stream's first chunk (time to first token)", func(k *Knobs) *time.Duration { return &k.TTFT }),
		delayKnob("chunk-delay", "delay between a stream's chunks", func(k *Knobs) *time.Duration { return &k.ChunkDelay }),
		{"error-rate", "fraction of requests answered 500 (0 to 1)",
			func(k *Knobs) string { return strconv.FormatFloat(k.ErrorRate, 'g', -1, 64) },
			func(k *Knobs, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || !(f >= 0 && f <= 1) {
					return fmt.Errorf("want a number from 0 to 1, got %q", v)
				}
				k.ErrorRate = f
				return nil
			}},
		intKnob("status", "answer every request with this status, 400 to 599 (0: off)", "0 or a status from 400 to 599",
			func(n int) bool { return n == 0 || between(400, 599)(n) }, func(k *Knobs) *int { return &k.Status }),
		intKnob("retry-after", "Retry-After of a 429, in seconds", "0 to 86400", between(0, 86400), func(k *Knobs) *int { return &k.RetryAfter }),
		intKnob("fail-first", "answer the first N attempts of a request (same x-request-id) 503", "0 to 1000", between(0, 1000), func(k *Knobs) *int { return &k.FailFirst }),
		intKnob("truncate", "cut a stream after N chunks, without its end (0: off)", "0 to 1000000", between(0, 1_000_000), func(k *Knobs) *int { return &k.Truncate }),
		{"usage", "usage reported: normal, missing, absurd (10^12 tokens) or negative",
			func(k *Knobs) string { return k.Usage },
			func(k *Knobs, v string) error {
				switch v {
				case "", UsageNormal, UsageMissing, UsageAbsurd, UsageNegative:
					k.Usage = v
					return nil
				}
				return fmt.Errorf("want normal, missing, absurd or negative, got %q", v)
			}},
	}
}

func delayKnob(name, usage string, field func(*Knobs) *time.Duration) knob {
	return knob{name, usage + " (e.g. 250ms)",
		func(k *Knobs) string { return field(k).String() },
		func(k *Knobs, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > maxDelay {
				return fmt.Errorf("want a duration from 0 to %s, got %q", maxDelay, v)
			}
			*field(k) = d
			return nil
		}}
}

// intKnob is a knob of a whole number n for which valid(n) holds; want
// says which numbers those are.
func intKnob(name, usage, want string, valid func(int) bool, field func(*Knobs) *int) knob {
	return knob{name, usage,
		func(k *Knobs) string { return strconv.Itoa(*field(k)) },
		func(k *Knobs, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || !valid(n) {
				return fmt.Errorf("want %s, got %q", want, v)
			}
			*field(k) = n
			return nil
		}}
}

// between reports whether lo <= n <= hi.
func between(lo, hi int) func(int) bool { return func(n int) bool { return n >= lo && n <= hi } }

// knobFlag is one knob of a Knobs as a flag.Value.
type knobFlag struct {
	k  *Knobs
	kb knob
}

func (f knobFlag) String() string {
	if f.k == nil {
		return ""
	}
	return f.kb.get(f.k)
}

func (f knobFlag) Set(v string) error { return f.kb.set(f.k, v) }

// RegisterFlags adds a flag for every knob to fs, with k's current values
// as defaults.
func (k *Knobs) RegisterFlags(fs *flag.FlagSet) {
	for _, kb := range knobs() {
		fs.Var(knobFlag{k, kb}, kb.name, kb.usage+"; header "+HeaderPrefix+kb.name+" overrides it per request")
	}
}

// Validate reports the first knob out of its bounds, naming its flag.
func (k Knobs) Validate() error {
	for _, kb := range knobs() {
		probe := k
		if err := kb.set(&probe, kb.get(&k)); err != nil {
			return fmt.Errorf("-%s: %w", kb.name, err)
		}
	}
	return nil
}

// withHeaders returns k overridden by h's knob headers; an invalid one is an
// error naming the header.
func (k Knobs) withHeaders(h http.Header) (Knobs, error) {
	for _, kb := range knobs() {
		name := HeaderPrefix + kb.name
		if v := h.Get(name); v != "" {
			if err := kb.set(&k, v); err != nil {
				return k, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return k, nil
}

// report applies the Usage knob to u: ok is false when no usage is to be
// reported.
func (k Knobs) report(u usage) (out usage, ok bool) {
	switch k.Usage {
	case UsageMissing:
		return usage{}, false
	case UsageAbsurd:
		return usage{absurdTokens, absurdTokens}, true
	case UsageNegative:
		return usage{-1, -1}, true
	}
	return u, true
}
