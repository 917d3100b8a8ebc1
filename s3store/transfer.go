package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// maxUploadAttempts is how many times Upload starts a multipart upload
// over after a 409 ConditionalRequestConflict or a vanished upload.
const maxUploadAttempts = 3

// Upload stores size bytes read from r as object name, unless an object has
// that name already, which is success: Upload is for content-addressed
// objects, whose name implies their content. Up to PartSize bytes go in one
// PutObject, more in a multipart upload of parts of PartSize (more if that
// would make over 10000 parts), sent one after the other and completed with
// "If-None-Match: *"; a failed multipart upload is aborted. The object
// becomes visible whole or not at all.
func (s *Store) Upload(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	key, err := s.key("upload", name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("s3store: upload %s: negative size %d", name, size)
	}
	if size <= s.partSize {
		err = s.putAbsent(ctx, key, r, size)
	} else {
		err = s.uploadParts(ctx, key, r, size)
	}
	if err != nil {
		return fmt.Errorf("s3store: upload %s: %w", name, err)
	}
	return nil
}

// putAbsent stores size bytes of r as key in one request, unless key exists.
//
// A server may answer 412 before it reads the body and close the
// connection, which the client sees as a reset while it sends (versitygw
// does): after a failed write, an object now there is the success that
// 412 would have meant.
func (s *Store) putAbsent(ctx context.Context, key string, r io.ReaderAt, size int64) error {
	if ok, err := s.exists(ctx, key); err != nil || ok {
		return err
	}
	pctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.client.PutObject(pctx, &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &key,
		Body:          io.NewSectionReader(r, 0, size),
		ContentLength: aws.Int64(size),
		IfNoneMatch:   aws.String("*"),
	}, retryConflicts)
	if err == nil || preconditionFailed(err) {
		return nil
	}
	if ok, herr := s.exists(ctx, key); herr == nil && ok {
		return nil
	}
	return err
}

// uploadParts stores size bytes of r as key in a multipart upload, unless
// key exists, starting over after a conflict.
func (s *Store) uploadParts(ctx context.Context, key string, r io.ReaderAt, size int64) error {
	for attempt := 1; ; attempt++ {
		// Not needed for correctness (the upload is conditional), but
		// it spares sending a large object a second time.
		if ok, err := s.exists(ctx, key); err != nil || ok {
			return err
		}
		err := s.multipart(ctx, key, r, size)
		switch {
		case err == nil, preconditionFailed(err):
			return nil
		case attempt == maxUploadAttempts || !conflict(err) && !noSuchUpload(err):
			return err
		}
		// A concurrent writer of the same key, or an upload aborted or
		// completed (by a retry whose first answer was lost) under us.
		s.log.Debug("s3store: multipart upload starts over", "store", s.Name(), "key", key, "attempt", attempt, "err", err)
		delay := time.Duration(attempt)*100*time.Millisecond + rand.N(100*time.Millisecond)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(delay):
		}
	}
}

// multipart stores size bytes of r as key in one multipart upload completed
// with "If-None-Match: *", and aborts the upload if anything fails.
func (s *Store) multipart(ctx context.Context, key string, r io.ReaderAt, size int64) (err error) {
	partSize := max(s.partSize, (size+maxParts-1)/maxParts)
	cctx, cancel := s.bound(ctx)
	created, err := s.client.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key})
	cancel()
	if err != nil {
		return err
	}
	id := created.UploadId
	if id == nil {
		return errors.New("CreateMultipartUpload returned no upload id")
	}
	defer func() {
		if err != nil {
			s.abort(ctx, key, *id)
		}
	}()

	parts := make([]types.CompletedPart, 0, (size+partSize-1)/partSize)
	for off, num := int64(0), int32(1); off < size; off, num = off+partSize, num+1 {
		n := min(partSize, size-off)
		etag, perr := s.uploadPart(ctx, key, *id, num, io.NewSectionReader(r, off, n))
		if perr != nil {
			return fmt.Errorf("part %d: %w", num, perr)
		}
		parts = append(parts, types.CompletedPart{ETag: etag, PartNumber: aws.Int32(num)})
	}

	cctx, cancel = s.bound(ctx)
	defer cancel()
	_, err = s.client.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             &key,
		UploadId:        id,
		IfNoneMatch:     aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	return err
}

// uploadPart sends part num of upload id and returns its ETag.
func (s *Store) uploadPart(ctx context.Context, key, id string, num int32, body *io.SectionReader) (*string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:        &s.bucket,
		Key:           &key,
		UploadId:      &id,
		PartNumber:    aws.Int32(num),
		Body:          body,
		ContentLength: aws.Int64(body.Size()),
	})
	if err != nil {
		return nil, err
	}
	return out.ETag, nil
}

// abort aborts upload id of key, best effort. It does so even if ctx is
// done, as it cleans up after failures, cancellation included.
func (s *Store) abort(ctx context.Context, key, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: &id})
	if err != nil && !noSuchUpload(err) {
		s.log.Warn("s3store: abort multipart upload", "store", s.Name(), "key", key, "upload", id, "err", err)
	}
}

// exists reports whether an object has key.
func (s *Store) exists(ctx context.Context, key string) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	switch {
	case err == nil:
		return true, nil
	case notFound(err):
		return false, nil
	}
	return false, err
}

// Download writes the content of object name, which must be exactly size
// bytes, to w, in ranged reads of PartSize bytes. A missing object is an
// error wrapping [fs.ErrNotExist]; an object of another size, or one
// replaced between two reads, is an error. Download never writes more than
// size bytes to w, but after an error w may hold a part of them.
func (s *Store) Download(ctx context.Context, name string, size int64, w io.Writer) error {
	key, err := s.key("download", name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("s3store: download %s: negative size %d", name, size)
	}
	if size == 0 {
		err = s.getEmpty(ctx, key)
	}
	var etag string
	for off := int64(0); err == nil && off < size; off += s.partSize {
		etag, err = s.getRange(ctx, key, off, min(s.partSize, size-off), size, etag, w)
	}
	if err != nil {
		return fmt.Errorf("s3store: download %s: %w", name, err)
	}
	return nil
}

// getRange writes bytes [off, off+n) of key, whose size must be size, to w
// and returns the object's ETag. If etag is not "", the object must still
// have it.
func (s *Store) getRange(ctx context.Context, key string, off, n, size int64, etag string, w io.Writer) (string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: &s.bucket,
		Key:    &key,
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		code, status := apiError(err)
		switch {
		case notFound(err):
			return "", fs.ErrNotExist
		case code == "InvalidRange" || status == 416:
			return "", fmt.Errorf("object is shorter than %d bytes", size)
		}
		return "", err
	}
	defer out.Body.Close()
	tag := aws.ToString(out.ETag)
	if etag != "" && tag != etag {
		return "", fmt.Errorf("object replaced while read (ETag %s, then %s)", etag, tag)
	}
	if err := checkRange(aws.ToString(out.ContentRange), aws.ToInt64(out.ContentLength), off, n, size); err != nil {
		return "", err
	}
	if _, err := io.CopyN(w, out.Body, n); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return tag, nil
}

// checkRange checks that an answer with contentRange and length to a
// request for bytes [off, off+n) of an object of size bytes holds exactly
// those bytes. A server may answer a request for the whole object with the
// whole object, without a Content-Range.
func checkRange(contentRange string, length, off, n, size int64) error {
	if contentRange == "" {
		if off == 0 && n == size && length == size {
			return nil
		}
		return fmt.Errorf("answer to a range request has no Content-Range and %d bytes", length)
	}
	var first, last, total int64
	if _, err := fmt.Sscanf(contentRange, "bytes %d-%d/%d", &first, &last, &total); err != nil {
		return fmt.Errorf("answer has Content-Range %q", contentRange)
	}
	if total != size {
		return fmt.Errorf("object is %d bytes, want %d", total, size)
	}
	if first != off || last != off+n-1 || length != n {
		return fmt.Errorf("answer has Content-Range %q and %d bytes, want bytes %d-%d", contentRange, length, off, off+n-1)
	}
	return nil
}

// getEmpty checks that key is an empty object.
func (s *Store) getEmpty(ctx context.Context, key string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		if notFound(err) {
			return fs.ErrNotExist
		}
		return err
	}
	defer out.Body.Close()
	if n := aws.ToInt64(out.ContentLength); n != 0 {
		return fmt.Errorf("object is %d bytes, want 0", n)
	}
	if k, err := io.CopyN(io.Discard, out.Body, 1); k != 0 || err != io.EOF {
		return fmt.Errorf("object is not empty (%v)", err)
	}
	return nil
}

// maxAbortsPerCall bounds the uploads one AbortUploads call collects;
// the next call finds the rest.
const maxAbortsPerCall = 100_000

// AbortUploads aborts the unfinished multipart uploads under the store's
// Prefix that were started before olderThan, and returns how many it
// aborted. Uploads that finish or are aborted meanwhile are not counted.
func (s *Store) AbortUploads(ctx context.Context, olderThan time.Time) (int, error) {
	// List first, abort after: a server may refuse, as the next page's
	// marker, an upload this call has aborted.
	var old []upload
	err := s.listUploads(ctx, s.prefix, func(u upload) bool {
		if u.initiated.Before(olderThan) {
			old = append(old, u)
		}
		return len(old) < maxAbortsPerCall
	})
	if err != nil {
		return 0, fmt.Errorf("s3store: abort uploads: %w", err)
	}
	n := 0
	for _, u := range old {
		actx, cancel := s.bound(ctx)
		_, err := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &u.key, UploadId: &u.id})
		cancel()
		switch {
		case err == nil:
			n++
		case !noSuchUpload(err):
			return n, fmt.Errorf("s3store: abort upload of %s: %w", u.key, err)
		}
	}
	return n, nil
}

type upload struct {
	key, id   string
	initiated time.Time
}

// listUploads calls fn for each unfinished multipart upload whose key
// starts with prefix, until fn returns false.
//
// Some servers (versitygw 1.8) refuse the upload-ID marker S3 pages with;
// then the rest of the marker's key's uploads are listed by that key
// alone, and the listing goes on from the next key.
func (s *Store) listUploads(ctx context.Context, prefix string, fn func(upload) bool) error {
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(prefix)}
	if s.pageSize > 0 {
		in.MaxUploads = aws.Int32(s.pageSize)
	}
	seen := map[string]bool{} // upload IDs, when a key is listed again
	for {
		lctx, cancel := s.bound(ctx)
		page, err := s.client.ListMultipartUploads(lctx, in)
		cancel()
		if code, _ := apiError(err); code == "InvalidArgument" && in.UploadIdMarker != nil {
			key := aws.ToString(in.KeyMarker)
			if err := s.listKeyUploads(ctx, key, seen, fn); err != nil {
				return err
			}
			in.UploadIdMarker = nil // from the next key on
			continue
		}
		if err != nil {
			return err
		}
		for _, u := range page.Uploads {
			id := aws.ToString(u.UploadId)
			if u.Initiated == nil || seen[id] {
				continue
			}
			seen[id] = true
			if !fn(upload{aws.ToString(u.Key), id, *u.Initiated}) {
				return nil
			}
		}
		if !aws.ToBool(page.IsTruncated) || page.NextKeyMarker == nil {
			return nil
		}
		in.KeyMarker, in.UploadIdMarker = page.NextKeyMarker, page.NextUploadIdMarker
	}
}

// listKeyUploads lists the uploads of exactly key that seen does not
// hold, a page of up to 1000: a key has few unfinished uploads.
func (s *Store) listKeyUploads(ctx context.Context, key string, seen map[string]bool, fn func(upload) bool) error {
	lctx, cancel := s.bound(ctx)
	page, err := s.client.ListMultipartUploads(lctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: &key})
	cancel()
	if err != nil {
		return err
	}
	for _, u := range page.Uploads {
		id := aws.ToString(u.UploadId)
		if aws.ToString(u.Key) != key || u.Initiated == nil || seen[id] {
			continue
		}
		seen[id] = true
		if !fn(upload{key, id, *u.Initiated}) {
			return nil
		}
	}
	return nil
}
