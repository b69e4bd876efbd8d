package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProvidersStubHelpNamesEnvironmentVariables(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"providers-stub", "-h"}, testEnv(&out, &out, nil))
	if err == nil || !strings.Contains(err.Error(), "help requested") {
		t.Fatalf("run providers-stub -h = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"[$LEAKY_OPENAI_ADDR]", "[$LEAKY_LATENCY]", "header x-stub-latency"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("providers-stub -h lacks %s:\n%s", want, out.String())
		}
	}
}

// `leaky providers-stub` prints the bound address of every provider it
// serves, takes its knobs from the environment too, and stops cleanly.
func TestProvidersStubServesThePrintedAddresses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"providers-stub", "-openai-addr", "127.0.0.1:0", "-gemini-addr", "", "-qwen-addr", "127.0.0.1:0"},
			testEnv(&stdout, &stderr, map[string]string{"LEAKY_USAGE": "missing"}))
	}()
	re := regexp.MustCompile(`providers-stub: (\w+) (http://127\.0\.0\.1:\d+)\n`)
	var found [][]string
	for deadline := time.Now().Add(60 * time.Second); len(found) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		found = re.FindAllStringSubmatch(stdout.String(), -1)
	}
	if len(found) != 2 || found[0][1] != "openai" || found[1][1] != "qwen" {
		cancel()
		t.Fatalf("printed %q, want openai and qwen; stderr:\n%s", stdout.String(), stderr.String())
	}
	resp, err := http.Post(found[1][2]+"/compatible-mode/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"qwen-plus","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if _, has := body["usage"]; err != nil || resp.StatusCode != 200 || has || body["object"] != "chat.completion" {
		t.Errorf("qwen answer %d %v (%v), want a chat completion without usage (LEAKY_USAGE=missing)", resp.StatusCode, body, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("providers-stub: %v", err)
	}
}
