package standin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
)

// Close releases what New bound when Run is never called: both addresses
// can be bound again, and Run refuses to start.
func TestCloseReleasesTheSockets(t *testing.T) {
	cfg := Config{
		Listen: "127.0.0.1:0", XDSAddr: "127.0.0.1:1", AdminAddr: "127.0.0.1:0", NodeID: testNode,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, ShutdownGrace: 5 * time.Second,
	}
	gw, err := New(cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{gw.Addr(), gw.AdminAddr()}
	if err := gw.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := gw.Close(); err != nil {
		t.Errorf("a second Close = %v", err)
	}
	if err := gw.Run(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Run after Close = %v, want %v", err, errClosed)
	}
	for _, a := range addrs {
		lis, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("after Close, %s cannot be bound again: %v", a, err)
			continue
		}
		lis.Close()
	}
}
