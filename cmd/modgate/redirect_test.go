package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/modgate/modgate/bpf"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParseRedirect(t *testing.T) {
	istio := bpf.Settings{ProxyPort: 15001, ExemptMark: 0x539, ExemptMask: 0xfff, RouteMark: 0x4000}
	tests := []struct {
		name    string
		args    []string
		want    redirectRun
		wantErr string // substring of a usageError, "" for none
	}{
		{"attach, defaults", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8:443"},
			redirectRun{op: "attach", cfg: bpf.AttachConfig{Iface: "eth0", Shape: bpf.InPod, Prefixes: prefixes("10.0.0.0/8"), Ports: []uint16{443},
				Settings: istio, RouteTable: 100, PinRoot: "/sys/fs/bpf/modgate"}}, ""},
		{"attach, everything", []string{"attach", "--iface", "veth1", "--shape", "node", "--to-port", "15006",
			"--capture", "[2001:db8::/32]:8443, 192.0.2.0/24:80", "--exempt-mark", "0x1/0x1", "--route-mark", "0x200",
			"--route-table", "1234", "--pin-root", "/sys/fs/bpf/pods/a/", "--mount-bpffs"},
			redirectRun{op: "attach", mountBPFFS: true, cfg: bpf.AttachConfig{Iface: "veth1", Shape: bpf.NodeLevel,
				Prefixes: prefixes("192.0.2.0/24", "2001:db8::/32"), Ports: []uint16{80, 8443},
				Settings:   bpf.Settings{ProxyPort: 15006, ExemptMark: 1, ExemptMask: 1, RouteMark: 0x200},
				RouteTable: 1234, PinRoot: "/sys/fs/bpf/pods/a"}}, ""},
		{"bare CIDRs and addresses, deduplicated", []string{"attach", "--iface", "eth0", "--capture", "203.0.113.0/24,2001:db8:1::/48,[2001:db8:1::/48]:443,203.0.113.7,::1"},
			redirectRun{op: "attach", cfg: bpf.AttachConfig{Iface: "eth0", Shape: bpf.InPod,
				Prefixes: prefixes("203.0.113.0/24", "203.0.113.7/32", "::1/128", "2001:db8:1::/48"), Ports: []uint16{80, 443},
				Settings: istio, RouteTable: 100, PinRoot: "/sys/fs/bpf/modgate"}}, ""},
		{"exempt none, mark alone", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--exempt-mark", "none"},
			redirectRun{op: "attach", cfg: bpf.AttachConfig{Iface: "eth0", Shape: bpf.InPod, Prefixes: prefixes("10.0.0.0/8"), Ports: []uint16{80, 443},
				Settings: bpf.Settings{ProxyPort: 15001, RouteMark: 0x4000}, RouteTable: 100, PinRoot: "/sys/fs/bpf/modgate"}}, ""},
		{"status", []string{"status", "--iface", "eth0", "--pin-root", "/x"},
			redirectRun{op: "status", cfg: bpf.AttachConfig{Iface: "eth0", PinRoot: "/x"}}, ""},
		{"detach", []string{"detach", "--iface", "eth0"},
			redirectRun{op: "detach", cfg: bpf.AttachConfig{Iface: "eth0", PinRoot: "/sys/fs/bpf/modgate"}}, ""},

		{"no subcommand", nil, redirectRun{}, "missing subcommand"},
		{"unknown subcommand", []string{"remove", "--iface", "eth0"}, redirectRun{}, `unknown subcommand "remove"`},
		{"no iface", []string{"status"}, redirectRun{}, "--iface is required"},
		{"unknown flag", []string{"status", "--iface", "eth0", "--verbose"}, redirectRun{}, "flag provided but not defined"},
		{"argument", []string{"detach", "--iface", "eth0", "extra"}, redirectRun{}, `unexpected argument "extra"`},
		{"attach flag on status", []string{"status", "--iface", "eth0", "--capture", "10.0.0.0/8:443", "--to-port", "1"}, redirectRun{}, "--capture, --to-port: for attach only"},
		{"no capture", []string{"attach", "--iface", "eth0"}, redirectRun{}, "--capture is required"},
		{"host bits", []string{"attach", "--iface", "eth0", "--capture", "10.1.2.3/8:443"}, redirectRun{}, "host bits set (10.0.0.0/8?)"},
		{"IPv6 without brackets", []string{"attach", "--iface", "eth0", "--capture", "2001:db8::/32:443"}, redirectRun{}, "write IPv6 as [CIDR]:PORT"},
		{"missing bracket", []string{"attach", "--iface", "eth0", "--capture", "[2001:db8::/32:443"}, redirectRun{}, "missing ]"},
		{"junk after bracket", []string{"attach", "--iface", "eth0", "--capture", "[2001:db8::/32]443"}, redirectRun{}, "want [CIDR]:PORT"},
		{"port 0", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8:0"}, redirectRun{}, `port "0"`},
		{"port too big", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8:65536"}, redirectRun{}, `port "65536"`},
		{"empty entry", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8:443,,"}, redirectRun{}, "empty entry"},
		{"mapped address", []string{"attach", "--iface", "eth0", "--capture", "[::ffff:10.0.0.0/104]:443"}, redirectRun{}, "IPv4-mapped"},
		{"zone", []string{"attach", "--iface", "eth0", "--capture", "[fe80::1%eth0]:443"}, redirectRun{}, "zone"},
		{"not a CIDR", []string{"attach", "--iface", "eth0", "--capture", "example.com:443"}, redirectRun{}, `"example.com:443"`},
		{"to-port 0", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--to-port", "0"}, redirectRun{}, "--to-port 0"},
		{"to-port too big", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--to-port", "70000"}, redirectRun{}, "--to-port 70000"},
		{"shape", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--shape", "sidecar"}, redirectRun{}, `--shape "sidecar"`},
		{"exempt mark outside mask", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--exempt-mark", "0x1539/0xfff"}, redirectRun{}, "outside the mask"},
		{"exempt mask 0", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--exempt-mark", "0/0"}, redirectRun{}, "mask 0"},
		{"exempt mark junk", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--exempt-mark", "istio"}, redirectRun{}, "32-bit number"},
		{"route mark 0", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--route-mark", "0"}, redirectRun{}, "--route-mark"},
		{"route table main", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--route-table", "254"}, redirectRun{}, "--route-table 254"},
		{"route table 0", []string{"attach", "--iface", "eth0", "--capture", "10.0.0.0/8", "--route-table", "0"}, redirectRun{}, "--route-table 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRedirect(tt.args, io.Discard)
			if tt.wantErr != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseRedirect(%q) = %v, want a usage error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRedirect(%q) = %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseRedirect(%q) =\n%+v\nwant\n%+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestRedirectHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"attach", "-h"}} {
		var stderr bytes.Buffer
		err := redirectCmd(t.Context(), args, io.Discard, &stderr)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "modgate redirect attach") {
			t.Errorf("redirectCmd(%q) = %v, usage %q; want ErrHelp and the usage", args, err, stderr.String())
		}
	}
}

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, "eth0", "/sys/fs/bpf/modgate/eth0", bpf.Status{
		Attached: true, Mode: "tcx", Shape: bpf.InPod,
		Prefixes: prefixes("203.0.113.0/24", "2001:db8::/32"), Ports: []uint16{80, 443},
		Settings:   bpf.Settings{ProxyPort: 15001, ExemptMark: 0x539, ExemptMask: 0xfff, RouteMark: 0x4000},
		RouteTable: 100,
		Counters:   map[bpf.Verdict]uint64{bpf.Assigned: 7, bpf.NoMatch: 3},
	})
	for _, want := range []string{
		"eth0: attached (tcx, in-pod), pinned in /sys/fs/bpf/modgate/eth0\n",
		"TCP to port 80, 443 at 203.0.113.0/24, 2001:db8::/32\n",
		"exempt mark: 0x539/0xfff\n",
		"mark 0x4000, table 100\n",
		"no-match 3, exempt 0, redirected 0, assigned 7",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("printStatus wrote\n%s\nwant it to contain %q", &b, want)
		}
	}
	b.Reset()
	printStatus(&b, "eth0", "/p/eth0", bpf.Status{})
	if got, want := b.String(), "eth0: not attached (nothing pinned in /p/eth0)\n"; got != want {
		t.Errorf("printStatus(not attached) = %q, want %q", got, want)
	}
}

func FuzzParseCapture(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8:443", "[2001:db8::/32]:443", "203.0.113.0/24,2001:db8:1::/48", "::1", "[", "a:b:c", "1.2.3.4/33:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, ports, err := parseCapture(s)
		if err != nil {
			return
		}
		if len(ps) == 0 || len(ports) == 0 {
			t.Fatalf("parseCapture(%q) = %v, %v, nil: want an error or both non-empty", s, ps, ports)
		}
		for _, p := range ps {
			if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" {
				t.Fatalf("parseCapture(%q): prefix %v is not a clean CIDR", s, p)
			}
		}
		for _, port := range ports {
			if port == 0 {
				t.Fatalf("parseCapture(%q): port 0", s)
			}
		}
	})
}
