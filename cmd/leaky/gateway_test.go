package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestGatewayRefusesAnAdminAddressOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9901", "10.1.2.3:9901", ":9901"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"gateway", "-listen", "127.0.0.1:0", "-admin-addr", addr},
			testEnv(&out, &out, nil))
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("gateway -admin-addr %s = %v, want a refusal naming loopback", addr, err)
		}
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"gateway", "-listen", "nowhere"},
		testEnv(&out, &out, map[string]string{"LEAKY_XDS_ADDR": "also-nowhere"}))
	if err == nil || !strings.Contains(err.Error(), `-listen "nowhere"`) || !strings.Contains(err.Error(), `-xds-addr "also-nowhere"`) {
		t.Errorf("gateway with bad addresses = %v, want both named", err)
	}
}
