package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/leakytokens/leaky/internal/contract"
)

// runRLCheck sends one ShouldRateLimit request and prints the answer as
// indented JSON. An OVER_LIMIT answer is an answer, not a failure; only a
// request that gets no answer fails.
func runRLCheck(ctx context.Context, e env, args []string) error {
	var (
		addr, domain string
		descs        descriptorFlag
		hits         uint32
		timeout      time.Duration
	)
	fs := newFlagSet(e, "rlcheck", "rlcheck -addr HOST:PORT [-domain D] -d key=value[,key=value…] [-d …] [-hits N]")
	fs.StringVar(&addr, "addr", "127.0.0.1:9092", "gRPC address of the RateLimitService")
	fs.StringVar(&domain, "domain", contract.Domain, "rate-limit domain")
	fs.Var(&descs, "d", "a descriptor as comma-separated key=value entries, e.g. provider=openai,tier=free,user=alice; repeat for more")
	fs.Var((*uint32Flag)(&hits), "hits", "hits_addend: `tokens` the request reserves (0: the server's default of 1)")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "deadline of the call")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if len(descs) == 0 {
		fmt.Fprintln(e.stderr, "rlcheck: at least one -d descriptor is required")
		fs.Usage()
		return errUsage
	}

	req := &rlsv3.RateLimitRequest{Domain: domain, Descriptors: descs, HitsAddend: hits}
	if err := req.ValidateAll(); err != nil {
		return fmt.Errorf("rlcheck: invalid request: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("rlcheck: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, req)
	if err != nil {
		return fmt.Errorf("rlcheck: %s: %w", addr, err)
	}
	// protojson varies its whitespace on purpose; json.Indent makes it stable.
	b, err := protojson.Marshal(resp)
	if err != nil {
		return fmt.Errorf("rlcheck: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("rlcheck: %w", err)
	}
	out.WriteByte('\n')
	if len(resp.GetRawBody()) > 0 {
		// rawBody is base64 in JSON; show the body Envoy would send as text.
		fmt.Fprintf(&out, "body: %s\n", resp.GetRawBody())
	}
	_, err = out.WriteTo(e.stdout)
	return err
}

// descriptorFlag collects -d flags; each is one descriptor written as
// key=value[,key=value…]. A value may be empty (a key-only entry); a key
// may not.
type descriptorFlag []*ratelimitv3.RateLimitDescriptor

func (d *descriptorFlag) String() string {
	if d == nil {
		return ""
	}
	parts := make([]string, len(*d))
	for i, desc := range *d {
		kvs := make([]string, len(desc.GetEntries()))
		for j, e := range desc.GetEntries() {
			kvs[j] = e.GetKey() + "=" + e.GetValue()
		}
		parts[i] = strings.Join(kvs, ",")
	}
	return strings.Join(parts, " ")
}

func (d *descriptorFlag) Set(s string) error {
	desc := &ratelimitv3.RateLimitDescriptor{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("entry %q: want key=value", kv)
		}
		desc.Entries = append(desc.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: strings.TrimSpace(v)})
	}
	*d = append(*d, desc)
	return nil
}

// uint32Flag is a flag holding a uint32.
type uint32Flag uint32

func (u *uint32Flag) String() string { return strconv.FormatUint(uint64(*u), 10) }

func (u *uint32Flag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return errors.New("want a whole number from 0 to 4294967295")
	}
	*u = uint32Flag(v)
	return nil
}
