package bpf

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestAttachConfigDefaults(t *testing.T) {
	got, err := AttachConfig{Iface: "eth0"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := AttachConfig{
		Iface:        "eth0",
		Shape:        InPod,
		Settings:     Settings{ProxyPort: 15001, RouteMark: 0x4000},
		RouteTable:   100,
		RulePriority: 1000,
		PinRoot:      "/sys/fs/bpf/modgate",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AttachConfig{Iface: eth0}.withDefaults() = %+v, want %+v", got, want)
	}

	tests := []struct {
		name    string
		cfg     AttachConfig
		wantErr string
	}{
		{"no iface", AttachConfig{}, "Iface: empty"},
		{"iface with slash", AttachConfig{Iface: "../x"}, "Iface: invalid"},
		{"iface too long", AttachConfig{Iface: "a234567890123456"}, "longer than 15"},
		{"shape", AttachConfig{Iface: "eth0", Shape: 3}, "Shape 3"},
		{"invalid prefix", AttachConfig{Iface: "eth0", Prefixes: []netip.Prefix{{}}}, "invalid prefix"},
		{"port 0", AttachConfig{Iface: "eth0", Ports: []uint16{443, 0}}, "port 0"},
		{"too many ports", AttachConfig{Iface: "eth0", Ports: make([]uint16, 65)}, "at most 64"},
		{"exempt mark outside mask", AttachConfig{Iface: "eth0", Settings: Settings{ExemptMark: 0x1539, ExemptMask: 0xfff}}, "outside ExemptMask"},
		{"route mark within exempt mark", AttachConfig{Iface: "eth0", Settings: Settings{ExemptMark: 0x539, ExemptMask: 0xfff, RouteMark: 0x8}}, "within the exempt mark"},
		{"main table", AttachConfig{Iface: "eth0", RouteTable: 254}, "RouteTable 254"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("withDefaults() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
