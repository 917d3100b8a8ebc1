package main

import (
	"encoding/json"
	"io"

	"github.com/modgate/modgate/repocheck"
)

// SARIF 2.1.0, the part modgate check writes: one run, one rule per kind
// of finding, one result per finding located in its file and line, so
// that code scanning shows it on the go.sum or vendor/ line.
type sarifLog struct {
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID               string       `json:"id"`
	ShortDescription sarifMessage `json:"shortDescription"`
	DefaultConfig    struct {
		Level string `json:"level"`
	} `json:"defaultConfiguration"`
}

type sarifMessage struct {
	Text string `json:"text"`
}

type sarifResult struct {
	RuleID    string          `json:"ruleId"`
	RuleIndex int             `json:"ruleIndex"`
	Level     string          `json:"level"`
	Message   sarifMessage    `json:"message"`
	Locations []sarifLocation `json:"locations"`
}

type sarifLocation struct {
	PhysicalLocation struct {
		ArtifactLocation struct {
			URI       string `json:"uri"`
			URIBaseID string `json:"uriBaseId"`
		} `json:"artifactLocation"`
		Region *sarifRegion `json:"region,omitempty"`
	} `json:"physicalLocation"`
}

type sarifRegion struct {
	StartLine int `json:"startLine"`
}

// sarifRules describes each kind of finding.
var sarifRules = []struct{ kind, text, level string }{
	{repocheck.KindForgedSum, "A go.sum line differs from the checksum database's record of that version: forged or stale.", "error"},
	{repocheck.KindUnknownVersion, "A go.sum line names a version the checksum database does not know.", "error"},
	{repocheck.KindVendorModified, "A vendored file differs from the file of the module's published zip.", "error"},
	{repocheck.KindVendorExtra, "A file under vendor/ is not in the module's published zip.", "error"},
	{repocheck.KindModulesTxt, "vendor/modules.txt disagrees with go.mod.", "error"},
	{repocheck.KindRefused, "The gateway would refuse this module version.", "error"},
	{repocheck.KindUnverifiable, "Could not be verified: a private module, or a module replaced by a local directory.", "note"},
}

// writeSARIF writes the report as a SARIF 2.1.0 log. Artifact URIs are
// relative to the repository (uriBaseId SRCROOT).
func (r *checkReport) writeSARIF(w io.Writer) error {
	driver := sarifDriver{Name: "modgate check"}
	index := map[string]int{}
	level := map[string]string{}
	for i, rule := range sarifRules {
		sr := sarifRule{ID: rule.kind, ShortDescription: sarifMessage{rule.text}}
		sr.DefaultConfig.Level = rule.level
		driver.Rules = append(driver.Rules, sr)
		index[rule.kind], level[rule.kind] = i, rule.level
	}
	results := []sarifResult{}
	for _, f := range r.Findings {
		res := sarifResult{RuleID: f.Kind, RuleIndex: index[f.Kind], Level: level[f.Kind], Message: sarifMessage{f.Message}}
		var loc sarifLocation
		loc.PhysicalLocation.ArtifactLocation.URI = f.File
		loc.PhysicalLocation.ArtifactLocation.URIBaseID = "SRCROOT"
		if f.Line > 0 {
			loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Line}
		}
		res.Locations = []sarifLocation{loc}
		results = append(results, res)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Version: "2.1.0", Runs: []sarifRun{{Tool: sarifTool{Driver: driver}, Results: results}}})
}
