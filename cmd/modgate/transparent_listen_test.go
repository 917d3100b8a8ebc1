package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modgate/modgate/bpf"
)

func TestCheckTransparentListen(t *testing.T) {
	tests := []struct {
		addr string
		want string // in the error; "" for none
	}{
		{"off", ""},
		{"0.0.0.0:15001", ""},
		{"[::]:15001", ""},
		{":15001", ""},
		{"0.0.0.0:0", ""},
		{"127.0.0.1:15001", "--transparent 127.0.0.1:15001: not a wildcard address: the redirect (bpf_sk_assign)"},
		{"127.0.0.1:15001", "write --transparent 0.0.0.0:15001 (or [::]:15001, or :15001)"},
		{"10.0.0.1:1", "write --transparent 0.0.0.0:1 "},
		{"[::1]:1", "--transparent [::1]:1: not a wildcard address"},
		{"localhost:15001", "not a wildcard address"},
		{"[::ffff:0.0.0.0]:15001", "not a wildcard address"},
		{"[::%lo]:15001", "not a wildcard address"},
		{"garbage", `--transparent "garbage": want 0.0.0.0:PORT, [::]:PORT or :PORT`},
		{"garbage", "for example --transparent 0.0.0.0:15001"},
		{"", "want 0.0.0.0:PORT"},
		{"OFF", "want 0.0.0.0:PORT"},
		{"15001", "want 0.0.0.0:PORT"},
		{"0.0.0.0:http", "a port number"},
		{"0.0.0.0:65536", "a port number"},
		{"0.0.0.0:-1", "a port number"},
	}
	for _, tt := range tests {
		err := checkTransparentListen("--transparent", " ", tt.addr)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkTransparentListen(%q) = %v, want nil", tt.addr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("checkTransparentListen(%q) = %v, want an error containing %q", tt.addr, err, tt.want)
		}
	}
}

// TestServeRefusesNonWildcardTransparent runs the commands with a
// transparent listener on 127.0.0.1, which the redirect can never hand a
// connection to: they must refuse before anything listens, naming the
// flag or the config file field, and say what to write instead.
func TestServeRefusesNonWildcardTransparent(t *testing.T) {
	const base = "upstreams: [{url: http://127.0.0.1:1}]\nsumdb_key: \"off\"\nxds_listen: \"off\"\n"
	plain := writeConfig(t, base)
	field := writeConfig(t, base+"transparent_listen: 127.0.0.1:0\n")
	off := []string{"--admin", "off", "--blob-listen", "off"}
	tests := []struct {
		name string
		cmd  func(ctx context.Context, args []string, stdout, stderr io.Writer) error
		args []string
		want []string
	}{
		{"flag", serve, append([]string{"--config", plain, "--listen", "off", "--extproc-listen", "off", "--xds-listen", "off", "--transparent", "127.0.0.1:0"}, off...),
			[]string{"--transparent 127.0.0.1:0: not a wildcard address", "bpf_sk_assign", "wildcard address (0.0.0.0 or [::])", "write --transparent 0.0.0.0:0"}},
		{"config file", serve, append([]string{"--config", field, "--listen", "off", "--extproc-listen", "off", "--xds-listen", "off"}, off...),
			[]string{"transparent_listen 127.0.0.1:0: not a wildcard address", "bpf_sk_assign", "write transparent_listen: 0.0.0.0:0"}},
		{"flag over config file", serve, append([]string{"--config", field, "--listen", "off", "--extproc-listen", "off", "--xds-listen", "off", "--transparent", "[::1]:0"}, off...),
			[]string{"--transparent [::1]:0: not a wildcard address", "write --transparent 0.0.0.0:0"}},
		{"extproc, config file", extprocCmd, append([]string{"--config", field, "--listen", "off"}, off...),
			[]string{"transparent_listen 127.0.0.1:0: not a wildcard address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Were the address taken, the command would run until ctx ends.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := tt.cmd(ctx, append(tt.args, "--cache-dir", t.TempDir()), &out, &out)
			if err == nil {
				t.Fatalf("%s %q = nil, want an error; output:\n%s", tt.name, tt.args, &out)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s = %v\nwant it to contain %q", tt.name, err, want)
				}
			}
			if strings.Contains(out.String(), "msg=listening") {
				t.Errorf("%s listened before refusing:\n%s", tt.name, &out)
			}
		})
	}
}

// Samples of /proc/net/tcp and tcp6 from a little-endian machine: the
// header, sockets in LISTEN (0A) and in TIME_WAIT (06).
const (
	procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1087 1 000000000633ec7e 100 0 0 10 0                      
   2: 0100007F:3A9C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 149681 1 0000000099b085ba 100 0 0 10 0                    
 202: 0100007F:83AA 0100007F:B307 06 00000000:00000000 03:00001702 00000000     0        0 0 3 000000000db77394                                      
1048: 0100007F:3A99 0100007F:B307 06 00000000:00000000 03:00001672 00000000     0        0 0 3 00000000af791dc4                                      
`
	procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:3A9A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 149679 1 000000000a756c65 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:3A9B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 149680 1 0000000084535497 100 0 0 10 0
   2: 00000000000000000000000000000000:3A99 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 149678 1 00000000295dd841 100 0 0 10 0
   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 149690 1 00000000295dd842 100 0 0 10 0
   4: B80D0120000000000000000002000000:C350 B80D0120000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 149691 1 00000000295dd843 20 4 30 10 -1
`
)

func addrPorts(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

func TestParseListeners(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the samples are from a little-endian machine")
	}
	tests := []struct {
		name    string
		in      string
		want    []netip.AddrPort
		wantErr string // in the error; "" for none
	}{
		{"IPv4", procTCP, addrPorts("0.0.0.0:2024", "127.0.0.1:15004"), ""},
		{"IPv6", procTCP6, addrPorts("[::1]:15002", "[::ffff:127.0.0.1]:15003", "[::]:15001", "[2001:db8::1]:443"), ""},
		{"empty", "", nil, ""},
		{"header only", strings.SplitAfter(procTCP, "\n")[0], nil, ""},
		{"no header, blank lines", "\n   0: 00000000:3A99 00000000:0000 0A\n\n", addrPorts("0.0.0.0:15001"), ""},
		{"lower-case hex", "0: 0100007f:3a99 00000000:0000 0A", addrPorts("127.0.0.1:15001"), ""},
		{"not LISTEN, unreadable address", "0: zz:zz 00000000:0000 06", nil, ""},

		{"header not first", "0: 00000000:3A99 00000000:0000 0A\nsl local_address rem_address st", nil, "line 2"},
		{"short line", "  sl local\n   0: 0100007F:3A9C", nil, `line 2: want "sl: local remote st ..."`},
		{"no colon after sl", "0 0100007F:3A9C 00000000:0000 0A", nil, "line 1"},
		{"not hex", "0: 0100007G:3A9C 00000000:0000 0A", nil, "address: not hex"},
		{"signed hex", "0: +100007F:3A9C 00000000:0000 0A", nil, "address: not hex"},
		{"7 digits", "0: 100007F:3A9C 00000000:0000 0A", nil, "want 8 or 32 hex digits"},
		{"16 digits", "0: 0100007F0100007F:3A9C 00000000:0000 0A", nil, "want 8 or 32 hex digits"},
		{"port 5 digits", "0: 0100007F:03A9C 00000000:0000 0A", nil, "want 8 or 32 hex digits"},
		{"port not hex", "0: 0100007F:3A9X 00000000:0000 0A", nil, "port: not hex"},
		{"no port", "0: 0100007F 00000000:0000 0A", nil, "want 8 or 32 hex digits"},
		{"two colons", "0: 0100007F:3A9C:1 00000000:0000 0A", nil, "want 8 or 32 hex digits"},
		{"line too long", "0: 00000000:3A99 00000000:0000 0A " + strings.Repeat("0", maxProcLine), nil, "token too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseListeners(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseListeners(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("parseListeners(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseListeners(f *testing.F) {
	for _, s := range []string{procTCP, procTCP6, "", "0: 0100007f:3a99 00000000:0000 0A", "0: zz:zz 00000000:0000 06",
		"0: 0100007G:3A9C 00000000:0000 0A", "0: 0100007F:3A9C:1 00000000:0000 0A", "0: 0100007F0100007F:3A9C 00000000:0000 0A"} {
		f.Add(s)
	}
	v4, v6 := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseListeners(strings.NewReader(s))
		if err != nil {
			if got != nil {
				t.Fatalf("parseListeners(%q) = %v, %v: want no addresses with an error", s, got, err)
			}
			return
		}
		for _, ap := range got {
			if !ap.IsValid() || ap.Addr().Zone() != "" || ap.Addr().Is4() == (ap.Addr().BitLen() == 128) {
				t.Fatalf("parseListeners(%q): address %v is not a plain IPv4 or IPv6 address and port", s, ap)
			}
		}
		for _, port := range []uint16{15001, 0} {
			listenerWarning(got, port, v4)
			listenerWarning(got, port, v6)
		}
	})
}

func TestListenerWarning(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	both := append(v4, netip.MustParsePrefix("2001:db8::/32"))
	tests := []struct {
		name      string
		listeners []netip.AddrPort
		prefixes  []netip.Prefix
		want      []string // in the warning; none for no warning
	}{
		{"dual-stack wildcard", addrPorts("[::]:15001"), both, nil},
		{"IPv4 wildcard, IPv4 captured", addrPorts("0.0.0.0:15001"), v4, nil},
		{"both wildcards", addrPorts("0.0.0.0:15001", "[::]:15001"), both, nil},
		{"wildcard and loopback", addrPorts("127.0.0.1:15001", "[::]:15001"), both, nil},

		{"nothing", nil, v4, []string{"nothing listens on port 15001 in this network namespace: captured connections will be dropped",
			"listen on 0.0.0.0:15001 or [::]:15001 (modgate serve --transparent 0.0.0.0:15001)"}},
		{"only other ports", addrPorts("[::]:15002", "0.0.0.0:80"), v4, []string{"nothing listens on port 15001"}},
		{"loopback only", addrPorts("127.0.0.1:15001", "[::1]:15001", "127.0.0.1:15001", "[::]:8080"), both,
			[]string{"port 15001 is listened on only at 127.0.0.1:15001, [::1]:15001, not at a wildcard address: the redirect (bpf_sk_assign)",
				"so captured connections will be dropped; listen on 0.0.0.0:15001 or [::]:15001"}},
		{"mapped unspecified is not a wildcard", addrPorts("[::ffff:0.0.0.0]:15001"), v4, []string{"only at [::ffff:0.0.0.0]:15001"}},
		{"IPv4 wildcard, IPv6 captured", addrPorts("0.0.0.0:15001"), both,
			[]string{"only an IPv4 socket listens on 0.0.0.0:15001: captured IPv6 connections (to 2001:db8::/32) will be dropped; listen on [::]:15001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := listenerWarning(tt.listeners, 15001, tt.prefixes)
			if len(tt.want) == 0 && got != "" {
				t.Errorf("listenerWarning(%v) = %q, want none", tt.listeners, got)
			}
			if len(tt.want) > 0 && got == "" {
				t.Errorf("listenerWarning(%v) = no warning, want one", tt.listeners)
			}
			for _, want := range tt.want {
				if !strings.Contains(got, want) {
					t.Errorf("listenerWarning(%v) = %q\nwant it to contain %q", tt.listeners, got, want)
				}
			}
		})
	}
}

// TestProxyListenerWarningHere reads this network namespace's sockets:
// a listener on 127.0.0.1 only is found and warned about. (A wildcard
// listener is tried in a namespace of its own, in the namespace test.)
func TestProxyListenerWarningHere(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/thread-self/net/tcp: Linux only")
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	cfg := bpf.AttachConfig{Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Settings: bpf.Settings{ProxyPort: port}}
	got := proxyListenerWarning(cfg)
	if want := fmt.Sprintf("port %d is listened on only at 127.0.0.1:%d, not at a wildcard address", port, port); !strings.Contains(got, want) {
		t.Errorf("proxyListenerWarning(port %d) = %q, want it to contain %q", port, got, want)
	}
}
