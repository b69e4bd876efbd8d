// Package gcratest holds the GCRA step table, steps.json: named rows of
// (time, TAT, limit, amount) and the expected outcome. The same table
// drives the Go reference (package gcra) and the Redis store's Lua script
// (package redisstore), so both must compute the same numbers to the
// microsecond.
package gcratest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"testing"
)

//go:embed steps.json
var stepsJSON []byte

// Step is one row of the table. Op is "decide" (take N at Now from a bucket
// whose TAT is TAT, 0 for a fresh one) or "adjust" (apply Delta). WantTAT is
// the TAT afterwards; Want, for decide rows, the Result.
type Step struct {
	Name     string `json:"name"`
	Op       string `json:"op"`
	Now      int64  `json:"now"`
	TAT      int64  `json:"tat"`
	Burst    int64  `json:"burst"`
	Interval int64  `json:"interval"`
	N        int64  `json:"n"`
	Delta    int64  `json:"delta"`
	WantTAT  int64  `json:"want_tat"`
	Want     *struct {
		Allowed    bool  `json:"allowed"`
		Remaining  int64 `json:"remaining"`
		RetryAfter int64 `json:"retry_after"`
		ResetAfter int64 `json:"reset_after"`
	} `json:"want"`
}

// Steps decodes the table strictly (unknown fields are errors) and fails
// the test if it cannot, or if it is empty.
func Steps(t testing.TB) []Step {
	t.Helper()
	var file struct {
		Comment string `json:"comment"`
		Steps   []Step `json:"steps"`
	}
	dec := json.NewDecoder(bytes.NewReader(stepsJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("gcratest/steps.json: %v", err)
	}
	if len(file.Steps) == 0 {
		t.Fatal("gcratest/steps.json: no steps")
	}
	return file.Steps
}
