package main

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/estimate"
)

// The metering end to end: a call through the gateway stand-in, whose
// ext_proc exchange reaches the ratelimit service's processor, settles the
// reservation ShouldRateLimit made for it at the usage the provider
// reported, read from its JSON or its stream as it passed.

// meteredChat is an OpenAI chat completion body; stream adds "stream":
// true, extra more members (JSON text, with a leading comma).
// A maxTokens of 0 leaves the limit out.
func meteredChat(maxTokens int, stream bool, extra string) string {
	b := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the meter"}]`
	if maxTokens > 0 {
		b += `,"max_tokens":` + itoa(maxTokens)
	}
	if stream {
		b += `,"stream":true`
	}
	return b + extra + "}"
}

// geminiChat is a Gemini generateContent body; a maxTokens of 0 leaves
// the limit out.
func geminiChat(maxTokens int) string {
	b := `{"contents":[{"role":"user","parts":[{"text":"Say hello to the meter"}]}]`
	if maxTokens > 0 {
		b += `,"generationConfig":{"maxOutputTokens":` + itoa(maxTokens) + `}`
	}
	return b + "}"
}

const (
	openAIChatPath   = "/openai/v1/chat/completions"
	geminiStreamPath = "/gemini/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse"
)

// Each call is settled by the metering once, with the outcome the
// response calls for, and the user's bucket, the org's pool and the
// provider's pool are each charged exactly that settlement: the provider's
// reported usage (JSON, an OpenAI stream whether or not the client asked
// for its usage, a Gemini SSE stream's last usageMetadata), the estimate
// when the usage is missing or absurd, what was streamed when the stream
// was cut. The settlements reach topic token-usage as reservation-settled
// events of kind metered.
func TestE2EMeteringSettlesAtUsage(t *testing.T) {
	s := newStack(t, meteringPolicy(t))
	u := s.newUser("meter-user")
	s.createOrg(u, "meter-org")
	org := map[string]string{contract.HeaderOrg: "meter-org"}

	tests := []struct {
		name    string
		path    string
		body    string
		knobs   map[string]string
		outcome string // the metering's settlement: usage, estimate or aborted
		sees    string // the client sees: "usage" (the one settled), "no usage", "" (not judged)
		done    bool   // the client's stream ends with data: [DONE]
		prompt  string // for a cut stream: the body without its completion limit, the estimate's prompt part
	}{
		{name: "a JSON completion", path: openAIChatPath, body: meteredChat(50, false, ""), outcome: outcomeUsage, sees: "usage"},
		{name: "an OpenAI stream without stream_options", path: openAIChatPath, body: meteredChat(12, true, ""),
			outcome: outcomeUsage, sees: "no usage", done: true},
		{name: "an OpenAI stream asking for its usage", path: openAIChatPath, body: meteredChat(12, true, `,"stream_options":{"include_usage":true}`),
			outcome: outcomeUsage, sees: "usage", done: true},
		{name: "a Gemini SSE stream", path: geminiStreamPath, body: geminiChat(12), outcome: outcomeUsage, sees: "usage"},
		{name: "a JSON completion without usage", path: openAIChatPath, body: meteredChat(50, false, ""),
			knobs: map[string]string{"x-stub-usage": "missing"}, outcome: outcomeEstimate, sees: "no usage"},
		{name: "a JSON completion with an absurd usage", path: openAIChatPath, body: meteredChat(50, false, ""),
			knobs: map[string]string{"x-stub-usage": "absurd"}, outcome: outcomeEstimate},
		{name: "an OpenAI stream without usage", path: openAIChatPath, body: meteredChat(12, true, ""),
			knobs: map[string]string{"x-stub-usage": "missing"}, outcome: outcomeEstimate, sees: "no usage", done: true},
		{name: "a Gemini stream with an absurd usage", path: geminiStreamPath, body: geminiChat(12),
			knobs: map[string]string{"x-stub-usage": "absurd"}, outcome: outcomeEstimate},
		{name: "an OpenAI stream cut by the provider", path: openAIChatPath, body: meteredChat(20, true, ""),
			knobs: map[string]string{"x-stub-truncate": "6"}, outcome: outcomeAborted, sees: "no usage", prompt: meteredChat(0, true, "")},
		{name: "a Gemini stream cut by the provider", path: geminiStreamPath, body: geminiChat(20),
			knobs: map[string]string{"x-stub-truncate": "5"}, outcome: outcomeAborted, prompt: geminiChat(0)},
	}
	var settled []int64 // every settlement of u, for the topic
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := s.in(t)
			provider := providerOfPath(tt.path)
			buckets := meteredBuckets(provider, u.id, "meter-org")
			header := withKey(u, org)
			for k, v := range tt.knobs {
				header[k] = v
			}
			before, settles := s.remainingOf(buckets), s.meterSettles()
			a, cut := s.doCut(http.MethodPost, s.gateway+tt.path, header, tt.body)
			if a.status != http.StatusOK || cut != (tt.outcome == outcomeAborted) {
				t.Fatalf("want 200, cut %v; got %s, cut %v", tt.outcome == outcomeAborted, a, cut)
			}
			est := int64(before["user"]) - admittedRemaining(t, a)
			outcome := s.waitSettled(settles)
			charged := chargedSince(before, s.remainingOf(buckets))
			if outcome != tt.outcome {
				t.Errorf("settled with outcome %q, want %q", outcome, tt.outcome)
			}
			var want int64
			switch tt.outcome {
			case outcomeUsage:
				want = s.providerUsage(tt.path, tt.body)
			case outcomeEstimate:
				want = est
			case outcomeAborted:
				// The prompt part of the estimate plus the streamed text, a
				// token per 4 bytes (at least what reached the client), never
				// above the estimate.
				want = charged["user"]
				prompt, _, _ := estimate.Body(tt.path, []byte(tt.prompt), 0)
				if low := prompt + (streamedText(a.body)+3)/4; want <= prompt || want < low || want > est {
					t.Errorf("a cut stream was settled at %d, want at least %d (the prompt part %d and the text streamed) and at most the estimate %d; the client got:\n%s",
						want, low, prompt, est, a.body)
				}
			}
			if want <= 0 || want == est && tt.outcome != outcomeEstimate {
				t.Errorf("the settlement %d: want above 0 and other than the estimate %d", want, est)
			}
			if diff := cmp.Diff(map[string]int64{"user": want, "org": want, "provider": want}, charged); diff != "" {
				t.Errorf("charged (-want +got), estimate %d:\n%s", est, diff)
			}
			settled = append(settled, want)
			switch usage, done := readUsage(a.body); {
			case done != tt.done:
				t.Errorf("the client's stream ended with [DONE]: %v, want %v:\n%s", done, tt.done, a.body)
			case tt.sees == "usage" && usage != want:
				t.Errorf("the client saw usage %d, want %d:\n%s", usage, want, a.body)
			case tt.sees == "no usage" && usage != 0:
				t.Errorf("the client saw usage %d, want none:\n%s", usage, a.body)
			}
		})
	}
	t.Run("the settlements reach token-usage", func(t *testing.T) {
		s := s.in(t)
		got := s.meteredEvents(u.id, len(settled))
		slices.Sort(got)
		slices.Sort(settled)
		if diff := cmp.Diff(settled, got); diff != "" {
			t.Errorf("actual of the reservation-settled events of %s (-settled +topic):\n%s", u.id, diff)
		}
	})
}

// Settlement outcomes, ratelimit_meter_settles_total's label.
const (
	outcomeUsage    = "usage"
	outcomeEstimate = "estimate"
	outcomeAborted  = "aborted"
)

// providerOfPath is the provider whose route path is: its first segment.
func providerOfPath(path string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return p
}

// meteredBuckets are the buckets a call of user through org to provider
// charges, by name.
func meteredBuckets(provider, user, org string) map[string][]string {
	return map[string][]string{
		"user": userBucket(provider, "free", user), "org": orgPool(provider, org), "provider": providerPool(provider),
	}
}

// chargedSince is what each bucket lost from before to after.
func chargedSince(before, after map[string]uint32) map[string]int64 {
	out := make(map[string]int64, len(before))
	for k := range before {
		out[k] = int64(before[k]) - int64(after[k])
	}
	return out
}

// A client that leaves mid-stream: while the stream runs its reservation is
// open and holds the estimate; once the client cancels, the metering settles
// it as aborted at what was streamed (the prompt part plus at least the
// text the client got, below the estimate, never 0), and it is closed.
func TestE2EMeteringClientAbort(t *testing.T) {
	s := newStack(t, meteringPolicy(t))
	u := s.newUser("meter-leaver")
	buckets := map[string][]string{"user": userBucket("openai", "free", u.id), "provider": providerPool("openai")}
	before, settles := s.remainingOf(buckets), s.meterSettles()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.gateway+openAIChatPath, strings.NewReader(meteredChat(30, true, "")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(contract.HeaderAPIKey, u.apiKey)
	req.Header.Set("x-stub-chunk-delay", "1s") // 30 words: half a minute unless the client leaves
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("want 200, got %s", resp.Status)
	}
	got := readEvents(t, bufio.NewReader(resp.Body), 2) // the role, then the first word
	est := int64(before["user"]) - admittedRemaining(t, answer{header: resp.Header})
	if open := s.d.rl.Reservations().Open(); open != 1 {
		t.Errorf("mid-stream: %d reservations open, want 1", open)
	}
	if c := chargedSince(before, s.remainingOf(buckets)); c["user"] != est || c["provider"] != est {
		t.Errorf("mid-stream: charged %v, want the estimate %d on each", c, est)
	}

	cancel()
	if outcome := s.waitSettled(settles); outcome != outcomeAborted {
		t.Errorf("settled with outcome %q, want %q", outcome, outcomeAborted)
	}
	c := chargedSince(before, s.remainingOf(buckets))
	prompt, _, _ := estimate.Body(openAIChatPath, []byte(meteredChat(0, true, "")), 0)
	low := prompt + (streamedText(got)+3)/4
	// A word or two of thirty streamed: well below the estimate.
	if c["user"] <= prompt || c["user"] < low || c["user"] >= est || c["provider"] != c["user"] {
		t.Errorf("an aborted stream charged %v, want at least %d (the prompt part %d and the text streamed) and below the estimate %d, the same on each; the client got:\n%s",
			c, low, prompt, est, got)
	}
	if open := s.d.rl.Reservations().Open(); open != 0 {
		t.Errorf("after the abort: %d reservations open, want 0", open)
	}
}

// readEvents reads n SSE events from r and returns them as they came.
func readEvents(t *testing.T, r *bufio.Reader, n int) string {
	t.Helper()
	var b strings.Builder
	for n > 0 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", b.String(), err)
		}
		b.WriteString(line)
		if line == "\n" {
			n--
		}
	}
	return b.String()
}
