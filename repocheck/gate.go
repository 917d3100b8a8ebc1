package repocheck

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Gate is the gateway, asked for one module version's zip with the
// caller's credentials: ok if it would serve it, else reason, in the
// gateway's words (the deny rule, the cooldown's date, the vulnerability
// IDs). An error means it could not be asked.
type Gate interface {
	Admits(ctx context.Context, path, version string) (ok bool, reason string, err error)
}

// CheckGate asks g about every module version whose zip the repository's
// go.sum files record (the code its builds use), parallel at a time
// (default 8), and returns a KindRefused finding, on that go.sum line,
// for each version g would refuse.
func CheckGate(ctx context.Context, dir string, g Gate, parallel int) ([]Finding, error) {
	files, err := SumFiles(dir)
	if err != nil {
		return nil, err
	}
	var zips []sumLine
	seen := map[string]bool{}
	for _, f := range files {
		lines, err := readSums(dir, f)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if k := l.path + "@" + l.version; !strings.HasSuffix(l.version, "/go.mod") && !seen[k] {
				seen[k] = true
				zips = append(zips, l)
			}
		}
	}
	if parallel <= 0 {
		parallel = 8
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		findings []Finding
		first    error
	)
	sem := make(chan struct{}, parallel)
	for _, l := range zips {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ok, reason, err := g.Admits(ctx, l.path, l.version)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if first == nil {
					first = fmt.Errorf("asking the gateway about %s@%s: %w", l.path, l.version, err)
				}
			case !ok:
				findings = append(findings, Finding{Kind: KindRefused, Module: l.path, Version: l.version, File: l.file, Line: l.line,
					Message: fmt.Sprintf("the gateway would refuse %s %s: %s", l.path, l.version, reason)})
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	slices.SortFunc(findings, func(a, b Finding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return a.Line - b.Line
	})
	return findings, nil
}
