package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMeteringSection(t *testing.T) {
	tests := []struct {
		name    string
		section string
		want    Metering
	}{
		{"no section", "", Metering{ForceStreamUsage: true}},
		{"empty section", "metering: {}\n", Metering{ForceStreamUsage: true}},
		{"clamp only keeps force", "metering: {clamp_max_tokens: true}\n", Metering{ClampMaxTokens: true, ForceStreamUsage: true}},
		{"force off is kept", "metering: {force_stream_usage: false}\n", Metering{}},
		{"both", "metering:\n  clamp_max_tokens: true\n  force_stream_usage: true\n", Metering{ClampMaxTokens: true, ForceStreamUsage: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(gatewayBase+tt.section))
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			if diff := cmp.Diff(tt.want, p.Metering); diff != "" {
				t.Errorf("Metering (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMeteringRefused(t *testing.T) {
	tests := []struct {
		name, section, want string
	}{
		{"unknown field", "metering: {clamp: true}\n", "field clamp not found"},
		{"not a boolean", "metering: {clamp_max_tokens: sometimes}\n", "cannot unmarshal"},
		{"a list", "metering: [true]\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(gatewayBase+tt.section))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMeteringOfTheExample(t *testing.T) {
	p, err := Parse("example.yaml", Example())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultMetering(), p.Metering); diff != "" {
		t.Errorf("example's metering (-want +got):\n%s", diff)
	}
}
