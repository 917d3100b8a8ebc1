package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/modgate/modgate/cache"
	"github.com/modgate/modgate/s3store"
)

const storeUsage = `Usage: modgate store gc [flags]

Tidies the store that replicas share (the store: section of modgate.yaml),
with credentials from the AWS SDK's standard chain:

  - aborts multipart uploads that never finished (a replica that died
    mid-fill leaves one);
  - deletes blobs that no entry names (an upload whose entry was never
    committed, or whose entry the bucket's lifecycle rules expired);
  - deletes entries of changing classes (lists, @latest, negative
    entries, tree heads) stored longer ago than --expired, which no
    replica would serve any more.

Nothing younger than --grace is touched, so a fill in progress on any
replica keeps its upload and its blob. Immutable entries are left to the
bucket's lifecycle rules (see the README). Safe to run while the replicas
serve, and to run on several machines at once.

Flags:
`

func storeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("store", storeUsage, stderr)
	config := fs.String("config", "", "read the store: section from this modgate.yaml `file`")
	grace := fs.Duration("grace", 24*time.Hour, "leave uploads, blobs and entries younger than this")
	expired := fs.Duration("expired", 7*24*time.Hour, "delete entries of changing classes stored longer ago than this")
	dryRun := fs.Bool("dry-run", false, "report what would be deleted, delete nothing")
	sub, err := parseSub(fs, args, "gc")
	if err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("store %s: takes no arguments", sub)}
	}
	if *grace < time.Hour {
		return usageError{"store gc: --grace under 1h could delete a fill in progress"}
	}
	if *expired < *grace {
		return usageError{"store gc: --expired must be at least --grace"}
	}
	cfg, err := loadConfig(*config)
	if err != nil {
		return err
	}
	if cfg.Store.Type == "" {
		return errors.New("store gc: the configuration has no store: section")
	}
	s, err := s3store.Open(ctx, s3store.Config{
		Bucket: cfg.Store.Bucket, Prefix: cfg.Store.Prefix, Endpoint: cfg.Store.Endpoint, Region: cfg.Store.Region,
		PartSize: int64(cfg.Store.PartSize), Timeout: cfg.Store.Timeout,
	})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	r, err := collectGarbage(ctx, s, time.Now(), *grace, *expired, *dryRun)
	verb := "deleted"
	if *dryRun {
		verb = "would delete"
	}
	fmt.Fprintf(stdout, "%s: aborted %d unfinished uploads; %s %d unreferenced blobs (%d bytes) and %d expired entries; kept %d entries, %d blobs\n",
		s.Name(), r.uploads, verb, r.blobs, r.blobBytes, r.entries, r.keptEntries, r.keptBlobs)
	return err
}

// gcStore is what the garbage collection needs of the store.
type gcStore interface {
	Get(ctx context.Context, name string, max int64) ([]byte, error)
	List(ctx context.Context, prefix string, fn func(s3store.Object) error) error
	Delete(ctx context.Context, name string) error
	AbortUploads(ctx context.Context, olderThan time.Time) (int, error)
}

type gcReport struct {
	uploads, blobs, entries int
	blobBytes               int64
	keptEntries, keptBlobs  int
}

// collectGarbage is `modgate store gc`. Blobs are listed after the
// entries, and only blobs older than grace are candidates, so a blob
// uploaded by a fill that commits its entry after the entries were read
// is young, and kept.
func collectGarbage(ctx context.Context, s gcStore, now time.Time, grace, expired time.Duration, dryRun bool) (gcReport, error) {
	var r gcReport
	if !dryRun {
		n, err := s.AbortUploads(ctx, now.Add(-grace))
		if err != nil {
			return r, err
		}
		r.uploads = n
	}
	referenced := map[string]bool{}
	err := s.List(ctx, cache.SharedEntriesPrefix, func(o s3store.Object) error {
		data, err := s.Get(ctx, o.Name, cache.SharedEntryMax)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		m, blob, err := cache.SharedEntryInfo(data)
		if err != nil {
			// Not modgate's: leave it to a person.
			r.keptEntries++
			return nil
		}
		old := o.Modified.Before(now.Add(-grace)) && m.Stored.Before(now.Add(-expired))
		if !m.Class.Immutable() && old {
			r.entries++
			if dryRun {
				return nil
			}
			return s.Delete(ctx, o.Name)
		}
		r.keptEntries++
		if blob != "" {
			referenced[blob] = true
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	err = s.List(ctx, cache.SharedBlobsPrefix, func(o s3store.Object) error {
		if referenced[o.Name] || !o.Modified.Before(now.Add(-grace)) {
			r.keptBlobs++
			return nil
		}
		r.blobs++
		r.blobBytes += o.Size
		if dryRun {
			return nil
		}
		return s.Delete(ctx, o.Name)
	})
	return r, err
}
