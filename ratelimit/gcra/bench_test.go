package gcra

import "testing"

// The benchmarks measure the pure decision, the floor under every store.

func BenchmarkDecide(b *testing.B) {
	l := Limit{Burst: 1000, Interval: 1000}
	b.Run("allowed", func(b *testing.B) {
		now, tat := int64(1_700_000_000_000_000), int64(0)
		for b.Loop() {
			now += 1000 // leaks one token per call: always admitted
			tat, _ = Decide(now, tat, l, 1)
		}
	})
	b.Run("refused", func(b *testing.B) {
		now := int64(1_700_000_000_000_000)
		tat := now + l.Tolerance()
		for b.Loop() {
			_, r := Decide(now, tat, l, 1)
			if r.Allowed {
				b.Fatal("admitted from a full bucket")
			}
		}
	})
	b.Run("check only", func(b *testing.B) {
		now := int64(1_700_000_000_000_000)
		tat := now + l.Tolerance()/2
		for b.Loop() {
			Decide(now, tat, l, 0)
		}
	})
}

func BenchmarkAdjust(b *testing.B) {
	l := Limit{Burst: 1000, Interval: 1000}
	now := int64(1_700_000_000_000_000)
	tat := now
	for i := 0; b.Loop(); i++ {
		delta := int64(5)
		if i%2 == 1 {
			delta = -5
		}
		tat = Adjust(now, tat, l, delta)
	}
}
