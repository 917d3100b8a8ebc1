package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
	"gopkg.in/yaml.v3"
)

// composeService is what the tests read of a docker-compose.yml service.
type composeService struct {
	Image       string   `yaml:"image"`
	Build       any      `yaml:"build"`
	Entrypoint  []string `yaml:"entrypoint"`
	Command     []string `yaml:"command"`
	Volumes     []string `yaml:"volumes"`
	NetworkMode string   `yaml:"network_mode"`
}

// modgateSubcommands returns the modgate subcommands a service built from
// the modgate image runs: the first word of its command (the image's
// entrypoint is the binary), or, behind a shell entrypoint, the word after
// "modgate" where a command of the script starts.
func modgateSubcommands(s composeService) []string {
	if len(s.Command) == 0 {
		return nil
	}
	if len(s.Entrypoint) == 0 {
		return s.Command[:1]
	}
	var subs []string
	for _, m := range regexp.MustCompile(`(?:^|&&|\|\||;)\s*modgate\s+(\S+)`).FindAllStringSubmatch(strings.Join(s.Command, " "), -1) {
		subs = append(subs, m[1])
	}
	return subs
}

// TestComposeFile checks docker-compose.yml without Docker: the services
// of the mesh are there, the Envoy image is pinned to the minor of the
// go-control-plane/envoy module in go.mod, every file it mounts exists,
// and every modgate command it runs is one the binary knows.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"certs", "modgate", "gateway", "client-sidecar", "go-client", "validate"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("docker-compose.yml has no service %q", name)
		}
	}

	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	var protoMinor string
	for _, r := range mf.Require {
		if r.Mod.Path == "github.com/envoyproxy/go-control-plane/envoy" {
			protoMinor = semver.MajorMinor(r.Mod.Version)
		}
	}
	if protoMinor == "" {
		t.Fatal("go.mod does not require github.com/envoyproxy/go-control-plane/envoy")
	}
	imageRE := regexp.MustCompile(`^envoyproxy/envoy:(v\d+\.\d+\.\d+)$`)
	for name, s := range compose.Services {
		if !strings.HasPrefix(s.Image, "envoyproxy/envoy") {
			continue
		}
		m := imageRE.FindStringSubmatch(s.Image)
		if m == nil {
			t.Errorf("service %s: image %q is not pinned to a release", name, s.Image)
			continue
		}
		if semver.MajorMinor(m[1]) != protoMinor || semver.Compare(m[1], "v1.37.0") < 0 {
			t.Errorf("service %s: Envoy %s, but the protos are %s (same minor, ≥ v1.37 wanted)", name, m[1], protoMinor)
		}
	}

	for name, s := range compose.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, "./") {
				continue // a named volume
			}
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
		if s.Build == nil {
			continue
		}
		subs := modgateSubcommands(s)
		if len(s.Command) > 0 && len(subs) == 0 {
			t.Errorf("service %s is built from the modgate image but runs no modgate command: %q", name, s.Command)
		}
		for _, sub := range subs {
			out, err := exec.Command(modgateBin, sub, "--help").CombinedOutput()
			if err != nil {
				t.Errorf("service %s runs modgate %s, which fails: %v\n%s", name, sub, err, out)
			}
		}
	}
	if s := compose.Services["go-client"]; s.NetworkMode != "service:client-sidecar" {
		t.Errorf("go-client network_mode = %q: it must share the sidecar's network to reach it on 127.0.0.1", s.NetworkMode)
	}
}

// TestComposeOneModgateProcess checks that the mesh runs one modgate
// process for the ext_proc sidecar and the control plane, so that they
// share one health registry: the sidecar's passive failures then drain
// upstreams in the clusters the gateway gets. Its listeners that the
// gateway reaches are not loopback, so they must use mesh TLS, and the
// gateway bootstrap must reach ext_proc and xDS at that one service.
func TestComposeOneModgateProcess(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var modgates []string
	for name, s := range compose.Services {
		if s.Build == nil || len(s.Entrypoint) > 0 {
			continue // not a long-running modgate (certs is a shell script)
		}
		modgates = append(modgates, name)
	}
	if len(modgates) != 1 || modgates[0] != "modgate" {
		t.Fatalf("long-running modgate services = %q, want exactly one, \"modgate\"", modgates)
	}
	s := compose.Services["modgate"]
	if got := strings.Join(s.Command, " "); len(s.Command) == 0 || s.Command[0] != "serve" || !strings.Contains(got, "--listen off") {
		t.Errorf("modgate service command = %q, want serve --listen off (ext_proc, blob, xDS and admin in one process)", got)
	}
	mounted := ""
	for _, v := range s.Volumes {
		if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") && strings.HasPrefix(dst, "/etc/modgate/modgate.yaml") {
			mounted = filepath.Join("..", src)
		}
	}
	if mounted == "" {
		t.Fatal("modgate service mounts no config at /etc/modgate/modgate.yaml")
	}
	cfgData, err := os.ReadFile(mounted)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ExtProcListen string `yaml:"extproc_listen"`
		BlobListen    string `yaml:"blob_listen"`
		XDSListen     string `yaml:"xds_listen"`
		MeshTLS       struct {
			Cert string `yaml:"cert"`
		} `yaml:"mesh_tls"`
		Insecure bool `yaml:"insecure_mesh_listeners"`
	}
	if err := yaml.Unmarshal(cfgData, &cfg); err != nil {
		t.Fatalf("%s: %v", mounted, err)
	}
	for field, addr := range map[string]string{"extproc_listen": cfg.ExtProcListen, "blob_listen": cfg.BlobListen, "xds_listen": cfg.XDSListen} {
		if addr == "" || addr == "off" {
			t.Errorf("%s: %s = %q: the one modgate process must serve it", mounted, field, addr)
		}
	}
	if cfg.MeshTLS.Cert == "" || cfg.Insecure {
		t.Errorf("%s: mesh_tls.cert %q, insecure_mesh_listeners %v: the gateway must reach modgate over mutual TLS", mounted, cfg.MeshTLS.Cert, cfg.Insecure)
	}
	// The gateway bootstrap reaches ext_proc and xDS at that service.
	gw, err := os.ReadFile("../envoy/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		StaticResources struct {
			Clusters []struct {
				Name           string `yaml:"name"`
				LoadAssignment struct {
					Endpoints []struct {
						LbEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address string `yaml:"address"`
									} `yaml:"socket_address"`
								} `yaml:"address"`
							} `yaml:"endpoint"`
						} `yaml:"lb_endpoints"`
					} `yaml:"endpoints"`
				} `yaml:"load_assignment"`
			} `yaml:"clusters"`
		} `yaml:"static_resources"`
	}
	if err := yaml.Unmarshal(gw, &boot); err != nil {
		t.Fatal(err)
	}
	hosts := map[string]string{}
	for _, c := range boot.StaticResources.Clusters {
		for _, e := range c.LoadAssignment.Endpoints {
			for _, lb := range e.LbEndpoints {
				hosts[c.Name] = lb.Endpoint.Address.SocketAddress.Address
			}
		}
	}
	for _, c := range []string{"modgate_extproc", "modgate_xds"} {
		if hosts[c] != "modgate" {
			t.Errorf("gateway.yaml cluster %s reaches %q, want the one modgate service", c, hosts[c])
		}
	}
}
