package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/modgate/modgate/repocheck"
)

func TestFirstProxyURL(t *testing.T) {
	for _, tt := range []struct{ goproxy, want string }{
		{"https://modgate.corp.example,direct", "https://modgate.corp.example"},
		{"http://127.0.0.1:8080|https://b.example", "http://127.0.0.1:8080"},
		{"direct", ""},
		{"off", ""},
		{"direct,https://late.example", ""},
		{"", ""},
	} {
		if got := firstProxyURL(tt.goproxy); got != tt.want {
			t.Errorf("firstProxyURL(%q) = %q, want %q", tt.goproxy, got, tt.want)
		}
	}
}

// TestCheckOutput: exit status by what was found (unverifiable is no
// failure), and SARIF 2.1.0's required structure with every result's
// rule defined and located.
func TestCheckOutput(t *testing.T) {
	r := &checkReport{Dir: ".", Counts: map[string]int{}}
	r.Findings = []repocheck.Finding{
		{Kind: repocheck.KindUnverifiable, Module: "corp.example/m", Version: "v1.0.0", File: "go.sum", Line: 1, Message: "private"},
	}
	r.Counts[repocheck.KindUnverifiable] = 1
	if r.failed() {
		t.Errorf("an unverifiable private module failed the check")
	}
	r.Findings = append(r.Findings, repocheck.Finding{Kind: repocheck.KindVendorModified, File: "vendor/example.com/m/m.go", Message: "modified"})
	r.Counts[repocheck.KindVendorModified] = 1
	if !r.failed() {
		t.Errorf("a modified vendored file did not fail the check")
	}
	var text bytes.Buffer
	r.writeText(&text)
	if !strings.Contains(text.String(), "vendor-modified (1):") || !strings.Contains(text.String(), "FAIL:") {
		t.Errorf("text output:\n%s", &text)
	}

	var out bytes.Buffer
	if err := r.writeSARIF(&out); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string
					Rules []struct{ ID string }
				}
			}
			Results []struct {
				RuleID    string
				RuleIndex int
				Level     string
				Message   struct{ Text string }
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct{ URI string }
						Region           *struct{ StartLine int }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Version != "2.1.0" || len(log.Runs) != 1 || log.Runs[0].Tool.Driver.Name == "" {
		t.Fatalf("SARIF log: %s", &out)
	}
	run := log.Runs[0]
	for _, res := range run.Results {
		if res.RuleIndex >= len(run.Tool.Driver.Rules) || run.Tool.Driver.Rules[res.RuleIndex].ID != res.RuleID {
			t.Errorf("result %+v: ruleIndex does not name its rule", res)
		}
		if res.Message.Text == "" || len(res.Locations) != 1 || res.Locations[0].PhysicalLocation.ArtifactLocation.URI == "" {
			t.Errorf("result %+v: no message or location", res)
		}
	}
	if run.Results[0].Level != "note" || run.Results[1].Level != "error" || run.Results[0].Locations[0].PhysicalLocation.Region.StartLine != 1 {
		t.Errorf("levels or lines: %s", &out)
	}
}
