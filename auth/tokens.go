package auth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/modgate/modgate/internal/files"
)

// TokenPrefix starts every token, so that people and secret scanners can
// tell a modgate token when they see one.
const TokenPrefix = "mgt_"

// tokenBytes is how many random bytes a token holds: 256 bits.
const tokenBytes = 32

// maxFileSize bounds the tokens file; a larger one is an error.
// It is 100,000 records of long names and several groups.
const maxFileSize = 16 << 20

// maxNameLen bounds names and groups.
const maxNameLen = 64

// header is the comment that starts every file this package writes.
const header = "# modgate tokens: NAME CREATED sha256:HASH [GROUP...]; edit with modgate token\n"

// A Record is one token in the tokens file. The token itself is not
// kept, only its hash.
type Record struct {
	Name    string    // unique in the file
	Groups  []string  // in the order given when created; may be empty
	Created time.Time // UTC, to the second
	Hash    [sha256.Size]byte
}

// Tokens is a parsed tokens file: an immutable set of records, safe for
// concurrent use. A nil *Tokens is the empty set.
type Tokens struct {
	records []Record
	// byHash maps the SHA-256 of a token to its record's index.
	byHash map[[sha256.Size]byte]int
}

// Len returns the number of tokens in t.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.records)
}

// lookup returns the record of token, or nil if there is none.
//
// Tokens are 256 random bits, so a fast hash is enough to store them: there
// is no dictionary of likely tokens to try, and SHA-256 cannot be inverted,
// so a password KDF (bcrypt, argon2) would cost every request time and buy
// nothing.
//
// The lookup is a map access keyed by the SHA-256 of the presented token.
// Comparing that digest with the stored ones may stop at the first
// differing byte, so its time depends on how many leading bytes of the
// digest match a stored one. That is safe: the attacker chooses the token,
// not its digest, and learning that SHA-256(guess) shares a prefix with a
// stored hash helps find neither the token nor a preimage (which is what
// makes a comparison of the token itself, byte by byte, unsafe). The token
// is hashed in full whatever it holds, so no check returns early on a
// prefix of the token, and the cost of an answer does not grow with the
// number of tokens.
func (t *Tokens) lookup(token string) *Record {
	if t == nil {
		return nil
	}
	i, ok := t.byHash[sha256.Sum256([]byte(token))]
	if !ok {
		return nil
	}
	return &t.records[i]
}

// Load reads the tokens file at path. A missing file is an error (wrapping
// fs.ErrNotExist): a server configured with a tokens file must not start
// without it; [Create] makes it. A malformed file is an error naming the
// first bad line.
func Load(path string) (*Tokens, error) {
	recs, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	t := &Tokens{records: recs, byHash: make(map[[sha256.Size]byte]int, len(recs))}
	for i, r := range recs {
		t.byHash[r.Hash] = i // parse refuses duplicate hashes
	}
	return t, nil
}

// List returns the records of the tokens file at path, in file order.
// A missing file is an error wrapping fs.ErrNotExist.
func List(path string) ([]Record, error) {
	recs, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return recs, nil
}

// Create makes a new token named name, in groups, created at now, and adds
// its hash to the tokens file at path, creating the file (mode 0600) if it
// does not exist. It returns the token, which is nowhere else: the file
// holds only its SHA-256.
//
// The name and every group must pass [CheckName]; the name must be new to
// the file (else the error wraps fs.ErrExist), and no group may be given
// twice. The file is rewritten atomically; comments in it are not kept.
func Create(path, name string, groups []string, now time.Time) (token string, err error) {
	if err := checkRecord(name, groups); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	err = update(path, true, func(recs []Record) ([]Record, error) {
		if slices.ContainsFunc(recs, func(r Record) bool { return r.Name == name }) {
			return nil, &nameError{name, fs.ErrExist}
		}
		token = newToken()
		return append(recs, Record{
			Name:    name,
			Groups:  slices.Clone(groups),
			Created: now.UTC().Truncate(time.Second),
			Hash:    sha256.Sum256([]byte(token)),
		}), nil
	})
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return token, nil
}

// Revoke removes the token named name from the tokens file at path.
// A name not in the file, or a missing file, is an error wrapping
// fs.ErrNotExist. The file is rewritten atomically; comments in it are
// not kept. A running server forgets the token when it reloads the file.
func Revoke(path, name string) error {
	err := update(path, false, func(recs []Record) ([]Record, error) {
		i := slices.IndexFunc(recs, func(r Record) bool { return r.Name == name })
		if i < 0 {
			return nil, &nameError{name, fs.ErrNotExist}
		}
		return slices.Delete(recs, i, i+1), nil
	})
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// A nameError is a token name already in the file (err fs.ErrExist) or
// not in it (err fs.ErrNotExist).
type nameError struct {
	name string
	err  error
}

func (e *nameError) Error() string {
	if e.err == fs.ErrExist {
		return fmt.Sprintf("a token named %q exists", e.name)
	}
	return fmt.Sprintf("no token named %q", e.name)
}

func (e *nameError) Is(target error) bool { return target == e.err }

// newToken returns a fresh token: TokenPrefix and 256 random bits in
// unpadded base64url.
func newToken() string {
	var b [tokenBytes]byte
	rand.Read(b[:]) // never returns an error; crashes the program if it cannot read
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// CheckName reports whether s is a valid token name or group: 1 to 64 of
// the characters a-z A-Z 0-9 . _ @ -.
func CheckName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("%q: want 1 to %d characters", s, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return fmt.Errorf("%q: want only a-z A-Z 0-9 . _ @ -", s)
		}
	}
	return nil
}

// CheckGroups reports whether groups are valid token or identity groups:
// each passes [CheckName], and none is given twice.
func CheckGroups(groups []string) error {
	for i, g := range groups {
		if err := CheckName(g); err != nil {
			return fmt.Errorf("group %w", err)
		}
		if slices.Contains(groups[:i], g) {
			return fmt.Errorf("group %q: given twice", g)
		}
	}
	return nil
}

// checkRecord checks a record's name and groups.
func checkRecord(name string, groups []string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("name %w", err)
	}
	return CheckGroups(groups)
}

// readFile reads and parses the tokens file at path.
func readFile(path string) ([]Record, error) {
	data, err := files.ReadMax(path, maxFileSize)
	if err != nil {
		return nil, err
	}
	recs, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

// update rewrites the tokens file at path with edit applied to its
// records, holding the file's lock so that concurrent updates do not lose
// each other's changes. If create, a missing file is taken as empty.
func update(path string, create bool, edit func([]Record) ([]Record, error)) error {
	if !create {
		if _, err := os.Stat(path); err != nil {
			return err // no stray lock file beside a wrong path
		}
	}
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := readFile(path)
	switch {
	case create && errors.Is(err, fs.ErrNotExist):
		recs = nil
	case err != nil:
		return err
	}
	recs, err = edit(recs)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return files.WriteAtomic(path, format(recs))
}

// format returns the tokens file holding recs.
func format(recs []Record) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	for _, r := range recs {
		b.WriteString(r.Name)
		b.WriteByte(' ')
		b.WriteString(r.Created.UTC().Format(time.RFC3339))
		b.WriteString(" sha256:")
		b.WriteString(hex.EncodeToString(r.Hash[:]))
		for _, g := range r.Groups {
			b.WriteByte(' ')
			b.WriteString(g)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// parse parses a tokens file (see the package documentation). An error
// names the first bad line.
func parse(data []byte) ([]Record, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	var recs []Record
	names := make(map[string]int)             // name → line
	hashes := make(map[[sha256.Size]byte]int) // hash → line
	for n := 1; len(data) > 0; n++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return nil, fmt.Errorf("line %d: no newline at end of file", n)
		}
		line := string(data[:i])
		data = data[i+1:]
		if line == "" || line[0] == '#' {
			continue
		}
		r, err := parseRecord(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if m, ok := names[r.Name]; ok {
			return nil, fmt.Errorf("line %d: name %q already on line %d", n, r.Name, m)
		}
		if m, ok := hashes[r.Hash]; ok {
			return nil, fmt.Errorf("line %d: same token hash as line %d", n, m)
		}
		names[r.Name] = n
		hashes[r.Hash] = n
		recs = append(recs, r)
	}
	return recs, nil
}

// parseRecord parses one record line, "NAME CREATED sha256:HASH [GROUP...]",
// its fields separated by single spaces.
func parseRecord(line string) (Record, error) {
	f := strings.Split(line, " ")
	if len(f) < 3 {
		return Record{}, errors.New("want NAME CREATED sha256:HASH [GROUP...], separated by single spaces")
	}
	r := Record{Name: f[0]}
	if err := CheckName(r.Name); err != nil {
		return Record{}, fmt.Errorf("name %w", err)
	}
	t, err := time.Parse(time.RFC3339, f[1])
	if err != nil || t.UTC().Format(time.RFC3339) != f[1] {
		return Record{}, fmt.Errorf("created %q: want RFC 3339 UTC to the second, like 2006-01-02T15:04:05Z", f[1])
	}
	r.Created = t.UTC()
	h, ok := strings.CutPrefix(f[2], "sha256:")
	b, err := hex.DecodeString(h)
	if !ok || err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != h {
		return Record{}, errors.New("hash: want sha256: and 64 lower-case hex digits")
	}
	if len(f) > 3 {
		r.Groups = f[3:]
		if err := CheckGroups(r.Groups); err != nil {
			return Record{}, err
		}
	}
	copy(r.Hash[:], b)
	return r, nil
}
