package main

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	// The module whose source holds the SARIF schema; see validateSARIF.
	_ "github.com/owenrumney/go-sarif/v3/pkg/report/v210/sarif"
	"github.com/xeipuuv/gojsonschema"

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
	validateSARIF(t, out.Bytes())
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

// sarifSchemaModule ships the OASIS SARIF 2.1.0 JSON schema (as the
// constant schema in pkg/report/v210/sarif/schema.go); go.mod requires it
// for this test alone, which reads the schema from the module's source
// rather than keep a copy.
const sarifSchemaModule = "github.com/owenrumney/go-sarif/v3"

// validateSARIF validates data, as written, against the SARIF 2.1.0
// schema.
func validateSARIF(t *testing.T, data []byte) {
	t.Helper()
	for _, e := range sarifErrors(t, data) {
		t.Errorf("SARIF output is not valid SARIF 2.1.0: %s", e)
	}
	// The validation itself can fail.
	if errs := sarifErrors(t, []byte(`{"version": "2.1.0", "runs": [{"tool": {"driver": {}}, "results": [{"level": "fatal", "message": {}}]}]}`)); len(errs) < 3 {
		t.Errorf("a document without a driver name, with a bad level and an empty message: %d schema errors, want at least 3", len(errs))
	}
}

// sarifErrors returns data's violations of the SARIF 2.1.0 schema.
func sarifErrors(t *testing.T, data []byte) []string {
	t.Helper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", sarifSchemaModule).Output()
	if err != nil || len(bytes.TrimSpace(dir)) == 0 {
		t.Fatalf("locating %s: %v", sarifSchemaModule, err)
	}
	file := filepath.Join(string(bytes.TrimSpace(dir)), "pkg", "report", "v210", "sarif", "schema.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var schema string
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "schema" {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
				schema, err = strconv.Unquote(lit.Value)
			}
		}
		return schema == ""
	})
	if schema == "" || err != nil || !strings.Contains(schema, "sarif-schema-2.1.0.json") {
		t.Fatalf("no SARIF 2.1.0 schema in %s (%v)", file, err)
	}
	res, err := gojsonschema.Validate(gojsonschema.NewStringLoader(schema), gojsonschema.NewBytesLoader(data))
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	for _, e := range res.Errors() {
		errs = append(errs, e.String())
	}
	return errs
}
