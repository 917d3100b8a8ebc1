package gitserver

import (
	"testing"
	"time"
)

// Standard describes the repositories [Server.Standard] builds.
//
// Repository "lib" (commits one hour apart from BaseTime):
//
//	1 module DOMAIN/lib                                 tag v1.0.0
//	2                                                   tag v1.1.0
//	3                                                   tag v1.2.0
//	4 go.mod: retract [v1.2.0, v1.2.1]                  tag v1.2.1
//	5 adds v2/go.mod (module DOMAIN/lib/v2)             tag v2.0.0
//	  and sub/go.mod (module DOMAIN/lib/sub)            tag sub/v1.0.0
//	6 a later change on main, untagged                  (Main)
//
// so DOMAIN/lib lists v1.0.0 v1.1.0 v1.2.0 v1.2.1, its @latest is v1.1.0
// (the two later versions are retracted), and the query "main" resolves
// to a pseudo-version of commit 6.
//
// Repository "old" has no go.mod at all:
//
//	1 tag v1.0.0
//	2 tag v3.0.0, so DOMAIN/old@v3.0.0+incompatible
type Standard struct {
	Lib *Repo
	Old *Repo

	Commits  map[string]string    // "lib@v1.0.0" etc. (repository@tag) → commit hash
	Times    map[string]time.Time // the same keys → commit time, the Time of .info
	Main     string               // hash of lib's untagged tip of main
	MainTime time.Time            // its commit time
}

// Standard builds the standard repositories "lib" and "old" described
// at [Standard] on s.
func (s *Server) Standard(t testing.TB) *Standard {
	t.Helper()
	d := s.Domain
	st := &Standard{
		Lib:     s.NewRepo(t, "lib"),
		Old:     s.NewRepo(t, "old"),
		Commits: make(map[string]string),
		Times:   make(map[string]time.Time),
	}
	tag := func(r *Repo, hash, name string) {
		r.Tag(t, name, hash)
		st.Commits[r.Name+"@"+name] = hash
		st.Times[r.Name+"@"+name] = r.Time(r.commits)
	}

	lib := st.Lib
	h := lib.Commit(t, "v1.0.0", map[string]string{
		"go.mod": GoMod(d + "/lib"),
		"lib.go": GoFile("lib", "v1.0.0"),
	})
	tag(lib, h, "v1.0.0")
	h = lib.Commit(t, "v1.1.0", map[string]string{"lib.go": GoFile("lib", "v1.1.0")})
	tag(lib, h, "v1.1.0")
	h = lib.Commit(t, "v1.2.0, broken", map[string]string{"lib.go": GoFile("lib", "v1.2.0")})
	tag(lib, h, "v1.2.0")
	h = lib.Commit(t, "v1.2.1 retracts v1.2.0 and itself", map[string]string{
		"go.mod": GoMod(d+"/lib", "// v1.2.0 is broken.\nretract [v1.2.0, v1.2.1]"),
	})
	tag(lib, h, "v1.2.1")
	h = lib.Commit(t, "v2 and sub", map[string]string{
		"v2/go.mod":  GoMod(d + "/lib/v2"),
		"v2/lib.go":  GoFile("lib", "v2.0.0"),
		"sub/go.mod": GoMod(d + "/lib/sub"),
		"sub/sub.go": GoFile("sub", "v1.0.0"),
	})
	tag(lib, h, "v2.0.0")
	tag(lib, h, "sub/v1.0.0")
	st.Main = lib.Commit(t, "work on main", map[string]string{"lib.go": GoFile("lib", "main")})
	st.MainTime = lib.Time(lib.commits)

	old := st.Old
	h = old.Commit(t, "v1", map[string]string{"old.go": GoFile("old", "v1.0.0")})
	tag(old, h, "v1.0.0")
	h = old.Commit(t, "v3 without go.mod", map[string]string{"old.go": GoFile("old", "v3.0.0")})
	tag(old, h, "v3.0.0")
	return st
}
