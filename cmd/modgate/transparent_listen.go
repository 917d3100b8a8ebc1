package main

// The transparent listener must be bound to the wildcard address. The
// redirect (bpf/redirect.c) gives a captured connection to its own socket
// or else to the listener it finds with bpf_skc_lookup_tcp for the
// wildcard address and the proxy's port: a captured connection's
// destination is somewhere else, never the proxy's address. A listener
// bound to 127.0.0.1:15001 is never found, and every captured connection
// is dropped (fail closed), silently. So serve refuses such an address,
// and `redirect attach` looks at what listens on --to-port and warns.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/modgate/modgate/bpf"
)

// whyWildcard is why the transparent listener must be on the wildcard
// address, for errors and warnings.
const whyWildcard = "the redirect (bpf_sk_assign) hands each captured connection, whose original destination is not the proxy's address, " +
	"to the socket listening on the proxy's port at the wildcard address (0.0.0.0 or [::]): a socket bound to one address is never found"

// checkTransparent refuses a transparent listener that the redirect could
// never hand a connection to, naming the flag or the config file field
// it came from.
func (f *serveFlags) checkTransparent(cfg *fileConfig) error {
	name, sep := "transparent_listen", ": " // as written in the config file
	if f.transparent != "" {
		name, sep = "--transparent", " "
	}
	return checkTransparentListen(name, sep, cfg.TransparentListen)
}

// checkTransparentListen checks addr, the transparent listener's address
// given as name (a flag, or a config file field): off, or a wildcard
// address and a numeric port (0.0.0.0:PORT, [::]:PORT or :PORT). sep
// joins name and a value in the advice: " " for a flag, ": " for a field.
func checkTransparentListen(name, sep, addr string) error {
	if addr == "off" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		return fmt.Errorf("%s %q: want 0.0.0.0:PORT, [::]:PORT or :PORT (a wildcard address and a port number), or off; for example %s%s0.0.0.0:%d",
			name, addr, name, sep, bpf.DefaultProxyPort)
	}
	if isWildcard(host) {
		return nil
	}
	return fmt.Errorf("%s %s: not a wildcard address: %s, so every captured connection would be dropped; write %s%s0.0.0.0:%d (or [::]:%d, or :%d)",
		name, addr, whyWildcard, name, sep, n, n, n)
}

// isWildcard reports whether host, from a host:port, is the wildcard
// address: "", 0.0.0.0 or ::.
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified() && a.Zone() == ""
}

// procNetTCP and procNetTCP6 are the TCP socket tables of the calling thread's network
// namespace (thread-self, not self: a test may run a thread in another
// namespace than the process's main thread). tcp6 is missing when the
// kernel has no IPv6.
const procNetTCP, procNetTCP6 = "/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"

// proxyListenerWarning looks at the TCP sockets listening in the calling
// thread's network namespace and returns a warning if the redirect that
// cfg attaches would find no listener on its proxy port there, or "" if
// all is well.
func proxyListenerWarning(cfg bpf.AttachConfig) string {
	port := cfg.Settings.ProxyPort
	listeners, err := readListeners(procNetTCP)
	if err != nil {
		return fmt.Sprintf("cannot check what listens on port %d: %v", port, err)
	}
	ls6, err := readListeners(procNetTCP6)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("cannot check what listens on port %d: %v", port, err)
	}
	return listenerWarning(append(listeners, ls6...), port, cfg.Prefixes)
}

// readListeners reads a /proc/net/tcp or tcp6 file with parseListeners.
func readListeners(name string) ([]netip.AddrPort, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ls, err := parseListeners(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ls, nil
}

// listenerWarning returns a warning if no socket among listeners (the
// local addresses of the listening TCP sockets) would receive the
// connections to prefixes captured for port: none listens on port at a
// wildcard address, or only an IPv4 one does and IPv6 is captured. It
// returns "" if all is well.
func listenerWarning(listeners []netip.AddrPort, port uint16, prefixes []netip.Prefix) string {
	var any4, any6 bool
	var specific []string
	for _, l := range listeners {
		switch {
		case l.Port() != port:
		case l.Addr().Is4() && l.Addr().IsUnspecified():
			any4 = true
		case l.Addr().Is6() && l.Addr().IsUnspecified():
			any6 = true // dual-stack unless IPV6_V6ONLY, which /proc does not show
		default:
			specific = append(specific, l.String())
		}
	}
	slices.Sort(specific)
	specific = slices.Compact(specific)
	fix := fmt.Sprintf("listen on 0.0.0.0:%d or [::]:%d (modgate serve --transparent 0.0.0.0:%d)", port, port, port)
	switch {
	case any6:
		return ""
	case any4:
		for _, p := range prefixes {
			if p.Addr().Is6() {
				return fmt.Sprintf("only an IPv4 socket listens on 0.0.0.0:%d: captured IPv6 connections (to %s) will be dropped; listen on [::]:%d, which takes IPv4 too (modgate serve --transparent [::]:%d)", port, p, port, port)
			}
		}
		return ""
	case len(specific) > 0:
		return fmt.Sprintf("port %d is listened on only at %s, not at a wildcard address: %s, so captured connections will be dropped; %s",
			port, strings.Join(specific, ", "), whyWildcard, fix)
	}
	return fmt.Sprintf("nothing listens on port %d in this network namespace: captured connections will be dropped until a proxy does; %s", port, fix)
}

// maxProcLine bounds a line of /proc/net/tcp: the kernel's are under 200
// bytes.
const maxProcLine = 4096

// tcpListen is TCP_LISTEN in the st column of /proc/net/tcp.
const tcpListen = "0A"

// parseListeners parses a /proc/net/tcp or /proc/net/tcp6 table and
// returns the local addresses of the sockets in state LISTEN, in the
// table's order. It treats the table as untrusted text: any line it
// cannot read is an error.
//
// A line is "sl: local remote st ...", the header "sl local_address ...";
// an address is the hex of its 32-bit words in host byte order (one for
// IPv4, four for IPv6) and a colon and the port's four hex digits.
func parseListeners(r io.Reader) ([]netip.AddrPort, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxProcLine)
	var out []netip.AddrPort
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || n == 1 && fields[0] == "sl" {
			continue
		}
		if len(fields) < 4 || !strings.HasSuffix(fields[0], ":") {
			return nil, fmt.Errorf("line %d: want \"sl: local remote st ...\"", n)
		}
		if fields[3] != tcpListen {
			continue
		}
		ap, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: local address %q: %w", n, fields[1], err)
		}
		out = append(out, ap)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return out, nil
}

// parseProcAddr parses a /proc/net/tcp address: ADDR:PORT, ADDR 8 or 32
// hex digits.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || len(hexPort) != 4 || len(hexAddr) != 8 && len(hexAddr) != 32 {
		return netip.AddrPort{}, errors.New("want 8 or 32 hex digits, a colon and 4 hex digits")
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, errors.New("port: not hex")
	}
	var b [16]byte
	for i := 0; i < len(hexAddr); i += 8 {
		w, err := strconv.ParseUint(hexAddr[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, errors.New("address: not hex")
		}
		binary.NativeEndian.PutUint32(b[i/2:], uint32(w))
	}
	a := netip.AddrFrom16(b)
	if len(hexAddr) == 8 {
		a = netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}
