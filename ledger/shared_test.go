package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modgate/modgate/integration/s3server"
	"github.com/modgate/modgate/ledger"
	"github.com/modgate/modgate/s3store"
)

const (
	hashA = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	hashB = "h1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="
)

// TestSharedLedger: replicas that share a store share one ledger. Of two
// replicas racing to record different hashes for one version, exactly one
// wins, and the other is refused, every time.
func TestSharedLedger(t *testing.T) {
	srv := s3server.Start(t, "ledger")
	srv.Setenv(t)
	store, err := s3store.Open(t.Context(), s3store.Config{Bucket: "ledger", Endpoint: srv.Endpoint, Region: srv.Region})
	if err != nil {
		t.Fatal(err)
	}
	open := func() *ledger.Ledger {
		l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		l.Share(store)
		t.Cleanup(func() { l.Close() })
		return l
	}
	a, b := open(), open()

	for i, v := range []string{"v1.0.0", "v1.0.1", "v1.0.2", "v1.0.3"} {
		var errs [2]error
		var wg sync.WaitGroup
		for j, l := range []*ledger.Ledger{a, b} {
			hash := []string{hashA, hashB}[j]
			wg.Go(func() { _, errs[j] = l.Check(t.Context(), "corp.example/m", v, hash) })
		}
		wg.Wait()
		var me *ledger.MismatchError
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.As(err, &me):
				t.Errorf("race %d: %v, want a mismatch for the loser", i, err)
			}
		}
		if won != 1 {
			t.Errorf("race %d on %s: errors %v, want exactly one winner", i, v, errs)
		}
	}
	var records []string
	store.List(t.Context(), "ledger/", func(o s3store.Object) error { records = append(records, o.Name); return nil })
	if len(records) != 4 {
		t.Errorf("records %q, want one per version", records)
	}

	// The same hash from another replica: accepted, not first.
	if first, err := b.Check(t.Context(), "corp.example/n", "v1.0.0/go.mod", hashA); !first || err != nil {
		t.Errorf("first record: %v, %v", first, err)
	}
	if first, err := a.Check(t.Context(), "corp.example/n", "v1.0.0/go.mod", hashA); first || err != nil {
		t.Errorf("the same hash on another replica: first %v, %v; want not first, accepted", first, err)
	}

	// A replica that never saw it reads the shared record.
	if h, ok, err := open().Recorded(t.Context(), "corp.example/n", "v1.0.0/go.mod"); h != hashA || !ok || err != nil {
		t.Errorf("Recorded on a third replica = %q, %v, %v; want the shared record", h, ok, err)
	}
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := a.Check(ctx, "corp.example/n", "v1.2.0", hashA); !errors.Is(err, ledger.ErrUnavailable) {
		t.Errorf("store down: %v, want ErrUnavailable", err)
	}
	// What this replica recorded still answers.
	if _, err := a.Check(ctx, "corp.example/n", "v1.0.0/go.mod", hashA); err != nil {
		t.Errorf("a hash this replica recorded, store down: %v", err)
	}
	srv.Restart(t)
	if _, err := a.Check(t.Context(), "corp.example/n", "v1.2.0", hashA); err != nil {
		t.Errorf("after the store came back: %v", err)
	}
}
