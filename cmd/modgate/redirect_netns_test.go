//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/modgate/modgate/bpf"
	"github.com/modgate/modgate/internal/netns"
)

// TestRedirectAttachListenerWarning runs `modgate redirect attach` for
// real, in a throwaway network namespace with a veth pair (eth0, eth1) and a private
// bpffs for the pins, with and without a proxy listening on --to-port:
// attach succeeds every time, and warns on stderr unless a socket
// listens there at the wildcard address. Needs root; skips without.
func TestRedirectAttachListenerWarning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN) for a network namespace and the redirect; CI runs it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	ns := fmt.Sprintf("mgcmd%d", os.Getpid())
	nsIP(t, "netns", "add", ns)
	t.Cleanup(func() { nsIP(t, "netns", "del", ns) })
	nsIP(t, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	nsIP(t, "-n", ns, "link", "set", "eth0", "up")
	nsIP(t, "-n", ns, "link", "set", "lo", "up")
	bpffs := t.TempDir()
	if err := bpf.MountBPFFS(bpffs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	pinRoot := filepath.Join(bpffs, "modgate")

	redirect := func(t *testing.T, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--iface", "eth0", "--pin-root", pinRoot)
		err = inNetns(ns, func() error { return redirectCmd(context.Background(), args, &out, &errOut) })
		return out.String(), errOut.String(), err
	}
	tests := []struct {
		name   string
		listen []string // network, address pairs listened on in the namespace
		want   string   // in the warning; "" for none
	}{
		{"nothing listens", nil, "warning: nothing listens on port 15001 in this network namespace: captured connections will be dropped"},
		{"loopback only", []string{"tcp4", "127.0.0.1:15001", "tcp6", "[::1]:15001"},
			"warning: port 15001 is listened on only at 127.0.0.1:15001, [::1]:15001, not at a wildcard address"},
		{"IPv4 wildcard only", []string{"tcp4", "0.0.0.0:15001"}, "warning: only an IPv4 socket listens on 0.0.0.0:15001: captured IPv6 connections"},
		{"other port", []string{"tcp", ":15002"}, "warning: nothing listens on port 15001"},
		{"wildcard", []string{"tcp", ":15001"}, ""},
		{"wildcard and loopback", []string{"tcp4", "127.0.0.1:15001", "tcp6", "[::]:15001"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < len(tt.listen); i += 2 {
				var l net.Listener
				err := inNetns(ns, func() (err error) { l, err = net.Listen(tt.listen[i], tt.listen[i+1]); return err })
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			}
			stdout, stderr, err := redirect(t, "attach", "--capture", "203.0.113.0/24:443,[2001:db8:1::/48]:443", "--to-port", "15001")
			if errors.Is(err, ebpf.ErrNotSupported) {
				t.Skipf("kernel lacks a feature: %v", err)
			}
			if err != nil {
				t.Fatalf("redirect attach = %v; stderr:\n%s", err, stderr)
			}
			t.Cleanup(func() {
				if _, stderr, err := redirect(t, "detach"); err != nil {
					t.Errorf("redirect detach = %v; stderr:\n%s", err, stderr)
				}
			})
			if !strings.Contains(stdout, "eth0: attached") {
				t.Errorf("redirect attach wrote\n%s\nwant the attached status", stdout)
			}
			switch {
			case tt.want == "" && stderr != "":
				t.Errorf("redirect attach with %q listening wrote to stderr:\n%s\nwant nothing", tt.listen, stderr)
			case tt.want != "" && !strings.Contains(stderr, tt.want):
				t.Errorf("redirect attach with %q listening wrote to stderr:\n%s\nwant it to contain %q", tt.listen, stderr, tt.want)
			}
		})
	}
	if stdout, _, err := redirect(t, "status"); err != nil || !strings.Contains(stdout, "not attached") {
		t.Errorf("redirect status after the detaches = %q, %v; want not attached", stdout, err)
	}
}

// nsIP runs ip with args, failing the test if it fails.
func nsIP(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs f in network namespace ns: netns.Do.
func inNetns(ns string, f func() error) error { return netns.Do(ns, f) }
