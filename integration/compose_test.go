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
		Services map[string]struct {
			Image       string   `yaml:"image"`
			Build       any      `yaml:"build"`
			Command     []string `yaml:"command"`
			Volumes     []string `yaml:"volumes"`
			NetworkMode string   `yaml:"network_mode"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"certs", "modgate", "modgate-xds", "gateway", "client-sidecar", "go-client", "validate"} {
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
		if s.Build != nil && len(s.Command) > 0 {
			// The modgate image's entrypoint is the binary: the command's
			// first word is a subcommand it must know.
			out, err := exec.Command(modgateBin, s.Command[0], "--help").CombinedOutput()
			if err != nil {
				t.Errorf("service %s runs modgate %s, which fails: %v\n%s", name, s.Command[0], err, out)
			}
		}
	}
	if s := compose.Services["go-client"]; s.NetworkMode != "service:client-sidecar" {
		t.Errorf("go-client network_mode = %q: it must share the sidecar's network to reach it on 127.0.0.1", s.NetworkMode)
	}
}
