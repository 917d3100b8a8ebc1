package cache

import (
	"fmt"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"

	"github.com/modgate/modgate/goproxy"
)

// A Class decides how long an entry is fresh and whether it is kept on
// disk. The classes and their default lifetimes are DESIGN.md's table.
type Class uint8

const (
	// Release: .info/.mod/.zip of a release version such as v1.2.3.
	Release Class = iota + 1
	// Prerelease: the same for a version such as v1.2.3-rc.1.
	Prerelease
	// Pseudo: the same for a pseudo-version such as v0.0.0-2024…-abcdef.
	Pseudo
	// Query: @v/list, @latest, and .info of a query such as "master".
	Query
	// Negative: an upstream's 404 or 410 (never a 5xx or a timeout).
	Negative
	// SumDB: checksum-database tiles and lookups.
	SumDB
	// SumDBLatest: the checksum database's signed tree head.
	SumDBLatest
)

var classNames = [...]string{
	Release:     "release",
	Prerelease:  "prerelease",
	Pseudo:      "pseudo",
	Query:       "query",
	Negative:    "negative",
	SumDB:       "sumdb",
	SumDBLatest: "sumdb-latest",
}

func (c Class) String() string {
	if int(c) < len(classNames) && classNames[c] != "" {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", c)
}

// Immutable reports whether an entry of class c never changes: it stays
// fresh for as long as it is cached, and it is kept on disk. The TTL of an
// immutable class only bounds its stay in the hot tier.
func (c Class) Immutable() bool {
	switch c {
	case Release, Prerelease, Pseudo, SumDB:
		return true
	}
	return false
}

// ClassOf returns the class of a successful response to r, and false for
// requests that are never cached (/sumdb/NAME/supported).
func ClassOf(r goproxy.Request) (Class, bool) {
	switch r.Kind {
	case goproxy.KindList, goproxy.KindLatest:
		return Query, true
	case goproxy.KindInfo, goproxy.KindMod, goproxy.KindZip:
		v := r.Version
		switch {
		case !semver.IsValid(v) || module.CanonicalVersion(v) != v:
			return Query, true // .info of a query; .mod and .zip are always canonical
		case module.IsPseudoVersion(v):
			return Pseudo, true
		case semver.Prerelease(v) != "":
			return Prerelease, true
		}
		return Release, true
	case goproxy.KindSumDBLookup, goproxy.KindSumDBTile:
		return SumDB, true
	case goproxy.KindSumDBLatest:
		return SumDBLatest, true
	}
	return 0, false
}

// TTLs are the hot-tier lifetimes per class. A zero field takes the
// default shown.
type TTLs struct {
	Release     time.Duration // 24h
	Prerelease  time.Duration // 2h
	Pseudo      time.Duration // 24h
	Query       time.Duration // 60s
	Negative    time.Duration // 5m
	SumDB       time.Duration // 24h
	SumDBLatest time.Duration // 1h
}

// DefaultTTLs are DESIGN.md's lifetimes.
var DefaultTTLs = TTLs{
	Release:     24 * time.Hour,
	Prerelease:  2 * time.Hour,
	Pseudo:      24 * time.Hour,
	Query:       60 * time.Second,
	Negative:    5 * time.Minute,
	SumDB:       24 * time.Hour,
	SumDBLatest: time.Hour,
}

// withDefaults fills zero fields from DefaultTTLs and refuses negative ones.
func (t TTLs) withDefaults() (TTLs, error) {
	fields := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"release", &t.Release, DefaultTTLs.Release},
		{"prerelease", &t.Prerelease, DefaultTTLs.Prerelease},
		{"pseudo", &t.Pseudo, DefaultTTLs.Pseudo},
		{"query", &t.Query, DefaultTTLs.Query},
		{"negative", &t.Negative, DefaultTTLs.Negative},
		{"sumdb", &t.SumDB, DefaultTTLs.SumDB},
		{"sumdb_latest", &t.SumDBLatest, DefaultTTLs.SumDBLatest},
	}
	for _, f := range fields {
		switch {
		case *f.v < 0:
			return t, fmt.Errorf("ttl.%s: negative", f.name)
		case *f.v == 0:
			*f.v = f.def
		case *f.v < time.Second:
			return t, fmt.Errorf("ttl.%s: %v is under a second", f.name, *f.v)
		}
	}
	return t, nil
}

// of returns the TTL of class c.
func (t TTLs) of(c Class) time.Duration {
	switch c {
	case Release:
		return t.Release
	case Prerelease:
		return t.Prerelease
	case Pseudo:
		return t.Pseudo
	case Query:
		return t.Query
	case Negative:
		return t.Negative
	case SumDB:
		return t.SumDB
	case SumDBLatest:
		return t.SumDBLatest
	}
	return 0
}
