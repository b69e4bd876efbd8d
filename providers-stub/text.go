package providersstub

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// The counting rule, the same for prompts and generated text in every API:
// a text of n bytes is ⌈n/4⌉ tokens; a request's prompt is the sum over its
// texts (every message, part or input), at least 1.

// tokens is ⌈len(text)/4⌉, the tokens of one text.
func tokens(text string) int64 { return (int64(len(text)) + 3) / 4 }

// promptTokens is the prompt tokens of a request whose texts are texts:
// the sum of their tokens, at least 1.
func promptTokens(texts []string) int64 {
	var n int64
	for _, t := range texts {
		n += tokens(t)
	}
	return max(1, n)
}

// wordList is what generated text is made of: 64 words of three bytes,
// each followed by a space. A text of n words joined by single spaces is
// 4n-1 bytes: exactly n tokens.
const wordList = "ant bay cob dew elm fig gem hay " +
	"ink jar key lid map net oak pea " +
	"ray sky tea urn van wax yak zip " +
	"arc bee cup den eel fox gum hut " +
	"ice jet kit log mud nut orb pod " +
	"rim sun tin use vow web yew zoo " +
	"axe bud cod dot egg fin gap hub " +
	"ivy jaw kin lab mix nib owl pen "

// word is the i-th word of wordList.
func word(i uint64) string {
	i %= uint64(len(wordList) / 4)
	return wordList[4*i : 4*i+3]
}

// generation is the text a stub produces for one prompt.
type generation struct {
	words []string
	// limited: the request's own limit (max_tokens, maxOutputTokens) ended
	// the text, not the stub's default length ("length", "MAX_TOKENS").
	limited bool
}

// generate returns the text for prompt: n words chosen by a hash of the
// prompt, n = limit when 0 < limit < def, else def. The same prompt and
// lengths give the same text every time.
func generate(prompt string, limit int64, def int) generation {
	n := int64(def)
	limited := limit > 0 && limit < n
	if limited {
		n = limit
	}
	rng := seeded(prompt)
	g := generation{words: make([]string, n), limited: limited}
	for i := range g.words {
		g.words[i] = word(rng.Uint64())
	}
	return g
}

// seeded returns a generator whose draws are a function of text.
func seeded(text string) *rand.Rand {
	sum := sha256.Sum256([]byte(text))
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))
}

// text is the whole generated text.
func (g generation) text() string { return strings.Join(g.words, " ") }

// pieces are the text in the deltas a stream sends, one word each; joined
// they are text().
func (g generation) pieces() []string {
	out := make([]string, len(g.words))
	for i, w := range g.words {
		if i > 0 {
			w = " " + w
		}
		out[i] = w
	}
	return out
}

// usage is what one answer reports, in tokens.
type usage struct {
	prompt, completion int64
}

func (u usage) total() int64 { return u.prompt + u.completion }

// absurdTokens is the count an "absurd" usage reports for prompt and
// completion alike.
const absurdTokens = 1_000_000_000_000
