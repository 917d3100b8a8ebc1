//go:build !unix

package auth

// lock does nothing where flock(2) is missing: concurrent updates of one
// tokens file may lose each other's changes there.
func lock(path string) (unlock func(), err error) {
	return func() {}, nil
}
