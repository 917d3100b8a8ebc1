// Package s3store keeps named objects in one bucket of an S3-compatible
// object store: the tier that several modgate replicas share.
//
// Every name is relative to [Config.Prefix]: the object name "blobs/x" is the
// key Prefix+"blobs/x" in [Config.Bucket], and [Store.List] returns names with
// the Prefix removed. Names are opaque strings, but they must be valid UTF-8
// without control characters or backslashes, and a "/"-separated list of
// non-empty elements other than "." and "..", so that they mean the same
// object on every S3 implementation; any other name is an error before a
// request is made.
//
// # Errors
//
// An error that wraps [fs.ErrNotExist] means the object is absent (S3's
// NoSuchKey). An error that wraps [fs.ErrExist] comes only from [Store.Put]
// with ifAbsent and means another object already has the name (412
// PreconditionFailed). Every other error — a missing bucket, denied access,
// a timeout, a server error, an object of an unexpected size — means the
// store could not answer and must never be taken for "absent". Errors read
// "s3store: OP NAME: ...".
//
// # Limits
//
// Every read is bounded: [Store.Get] reads at most max+1 bytes,
// [Store.Download] writes exactly the size the caller expects and never
// more, and fails if the object has another size or is replaced between two
// of its ranged reads. Every request carries [Config.Timeout] unless the
// caller's context has a shorter deadline; a transfer in parts bounds each
// part (its request and its body), not the whole. The SDK retries
// throttling, 5xx and connection errors within that bound.
//
// # Conditional writes
//
// [Store.Put] with ifAbsent and [Store.Upload] send "If-None-Match: *" on
// the request that makes the object visible (PutObject, or
// CompleteMultipartUpload), so of several writers racing for one name,
// across replicas, exactly one creates it and the others see it exists; a
// multipart object becomes visible whole or not at all. The server answers
// 409 ConditionalRequestConflict when another conditional write of the name
// is in flight: a PutObject is then retried by the SDK (within its attempts
// and the timeout), a multipart upload is started over (at most 3 times in
// all) unless the object exists by then. If it is still 409, the error is
// not [fs.ErrExist]: the winner is not known.
//
// A retried request can find the object its own first attempt created,
// when that attempt's answer was lost: Put with ifAbsent then returns
// [fs.ErrExist] for an object it wrote. Callers that must know compare the
// content ([Store.Get]); for Upload it does not matter.
//
// Credentials come only from the AWS SDK's standard chain (environment,
// shared config files, container and instance roles); so do its other
// settings, e.g. AWS_REQUEST_CHECKSUM_CALCULATION=when_required for a store
// that rejects the SDK's default request checksums.
//
// A Store is safe for concurrent use.
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

const (
	minPartSize = 5 << 20 // S3's minimum size of a part but the last
	maxPartSize = 5 << 30 // S3's maximum size of a part
	maxParts    = 10000   // S3's maximum number of parts of an upload
)

// Config configures [Open]. Only Bucket is required.
type Config struct {
	Bucket   string        // the bucket; required, and it must exist
	Prefix   string        // prepended to every name, e.g. "cache/"; "" or ending in "/"; default ""
	Endpoint string        // e.g. "http://127.0.0.1:9000", with path-style addressing; default "", the SDK's endpoint for Region
	Region   string        // default "us-east-1"
	PartSize int64         // part size of uploads and downloads; at least 5 MiB; default 8 MiB
	Timeout  time.Duration // bound on each request (each part of a transfer); default 30s
	Logger   *slog.Logger  // default slog.Default()
}

// A Store is a bucket (and prefix) of an S3-compatible object store; see
// [Open].
type Store struct {
	client   *s3.Client
	bucket   string
	prefix   string
	partSize int64
	timeout  time.Duration
	log      *slog.Logger
	pageSize int32 // MaxKeys of a List or AbortUploads page; 0 is the server's default (1000)
}

// Open checks cfg, loads credentials from the AWS SDK's standard chain
// (environment, shared config files, container and instance roles), and
// checks with HeadBucket that the bucket is reachable with them.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		partSize: cfg.PartSize,
		timeout:  cfg.Timeout,
		log:      cfg.Logger,
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	if s.partSize == 0 {
		s.partSize = 8 << 20
	}
	if s.timeout == 0 {
		s.timeout = 30 * time.Second
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	switch {
	case s.bucket == "":
		return nil, errors.New("s3store: Config.Bucket is required")
	case s.prefix != "" && !strings.HasSuffix(s.prefix, "/"):
		return nil, fmt.Errorf("s3store: Config.Prefix %q does not end in /", s.prefix)
	case s.partSize < minPartSize || s.partSize > maxPartSize:
		return nil, fmt.Errorf("s3store: Config.PartSize %d is not between 5 MiB and 5 GiB", s.partSize)
	case s.timeout < 0:
		return nil, fmt.Errorf("s3store: Config.Timeout %v is negative", s.timeout)
	}
	if err := checkPrefix(s.prefix); err != nil {
		return nil, fmt.Errorf("s3store: Config.Prefix: %v", err)
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3store: Config.Endpoint %q is not an http or https URL", cfg.Endpoint)
		}
	}

	awsCfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(region),
		config.WithLogger(sdkLogger{s.log}),
	)
	if err != nil {
		return nil, fmt.Errorf("s3store: open %s: load AWS configuration: %w", s.Name(), err)
	}
	s.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
		}
		// Ranged reads never carry a whole-object checksum; that is expected.
		o.DisableLogOutputChecksumValidationSkipped = true
	})

	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket}); err != nil {
		return nil, fmt.Errorf("s3store: open %s: bucket not reachable: %w", s.Name(), err)
	}
	return s, nil
}

// Name returns "s3://BUCKET/PREFIX", for logs.
func (s *Store) Name() string {
	return "s3://" + s.bucket + "/" + s.prefix
}

// Get returns the content of object name. An object of more than max bytes
// is an error; Get reads at most max+1 bytes of it.
func (s *Store) Get(ctx context.Context, name string, max int64) ([]byte, error) {
	key, err := s.key("get", name)
	if err != nil {
		return nil, err
	}
	if max < 0 {
		return nil, fmt.Errorf("s3store: get %s: negative limit %d", name, max)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("s3store: get %s: %w", name, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("s3store: get %s: %w", name, err)
	}
	defer out.Body.Close()
	n := aws.ToInt64(out.ContentLength)
	if n > max {
		return nil, fmt.Errorf("s3store: get %s: object is %d bytes, more than the limit of %d", name, n, max)
	}
	var buf bytes.Buffer
	if n > 0 {
		buf.Grow(int(n))
	}
	limit := max
	if limit < math.MaxInt64 {
		limit++
	}
	if _, err := buf.ReadFrom(io.LimitReader(out.Body, limit)); err != nil {
		return nil, fmt.Errorf("s3store: get %s: %w", name, err)
	}
	if int64(buf.Len()) > max {
		return nil, fmt.Errorf("s3store: get %s: object is more than the limit of %d bytes", name, max)
	}
	return buf.Bytes(), nil
}

// Put stores data as object name. With ifAbsent, it creates the object
// only if no object has the name, and an existing object is an error
// wrapping [fs.ErrExist] (see the package comment for races and retries);
// without, it replaces any object of that name.
func (s *Store) Put(ctx context.Context, name string, data []byte, ifAbsent bool) error {
	key, err := s.key("put", name)
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &key,
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	}
	if ifAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err = s.client.PutObject(ctx, in, retryConflicts)
	switch {
	case err == nil:
		return nil
	case ifAbsent && preconditionFailed(err):
		return fmt.Errorf("s3store: put %s: %w", name, fs.ErrExist)
	}
	return fmt.Errorf("s3store: put %s: %w", name, err)
}

// Delete removes object name. A missing object is not an error.
func (s *Store) Delete(ctx context.Context, name string) error {
	key, err := s.key("delete", name)
	if err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil && !notFound(err) {
		return fmt.Errorf("s3store: delete %s: %w", name, err)
	}
	return nil
}

// An Object describes a stored object, as listed by [Store.List].
type Object struct {
	Name     string    // relative to the store's Prefix
	Size     int64     // in bytes
	Modified time.Time // last written
}

// List calls fn for every object whose name starts with prefix, in
// lexical order of their keys, a page (1000 objects) at a time. An error
// from fn stops List, which returns it as is.
func (s *Store) List(ctx context.Context, prefix string, fn func(Object) error) error {
	if err := checkPrefix(prefix); err != nil {
		return fmt.Errorf("s3store: list: %v", err)
	}
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)}
	if s.pageSize > 0 {
		in.MaxKeys = aws.Int32(s.pageSize)
	}
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		page, err := nextPage(ctx, s.timeout, pages.NextPage)
		if err != nil {
			return fmt.Errorf("s3store: list %s: %w", prefix, err)
		}
		for _, o := range page.Contents {
			name, ok := strings.CutPrefix(aws.ToString(o.Key), s.prefix)
			if !ok {
				continue
			}
			err := fn(Object{Name: name, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// nextPage fetches the next page of a paginator within timeout.
func nextPage[T any](ctx context.Context, timeout time.Duration, next func(context.Context, ...func(*s3.Options)) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return next(ctx)
}

// key returns the key of object name, or an error for operation op if
// name is not a valid name.
func (s *Store) key(op, name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("s3store: %s: %v", op, err)
	}
	key := s.prefix + name
	if len(key) > maxKeyLen {
		return "", fmt.Errorf("s3store: %s: name of %d bytes: longer than S3's %d with the prefix", op, len(name), maxKeyLen)
	}
	return key, nil
}

// bound returns ctx limited to the store's request timeout.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// retryConflicts makes the SDK retry a request answered by 409
// ConditionalRequestConflict (another conditional write of the same key in
// flight), as S3 asks of a PutObject; it does not fit
// CompleteMultipartUpload, whose upload must be started over.
func retryConflicts(o *s3.Options) {
	o.Retryer = retry.AddWithErrorCodes(o.Retryer, "ConditionalRequestConflict")
}

// apiError returns the S3 error code and HTTP status of err, or "" and 0.
func apiError(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// notFound reports whether err says the object is absent: NoSuchKey, or
// NotFound (the code the SDK gives a 404 answer to HEAD, which has no
// body). A missing bucket (NoSuchBucket) or upload (NoSuchUpload) is not.
func notFound(err error) bool {
	code, _ := apiError(err)
	return code == "NoSuchKey" || code == "NotFound"
}

// preconditionFailed reports whether err is a 412 answer to a conditional
// request.
func preconditionFailed(err error) bool {
	code, status := apiError(err)
	return code == "PreconditionFailed" || status == 412
}

// conflict reports whether err is a 409 ConditionalRequestConflict: another
// conditional write of the key was in flight.
func conflict(err error) bool {
	code, _ := apiError(err)
	return code == "ConditionalRequestConflict"
}

// noSuchUpload reports whether err says a multipart upload is gone
// (aborted, or completed).
func noSuchUpload(err error) bool {
	code, _ := apiError(err)
	return code == "NoSuchUpload"
}

// sdkLogger passes the AWS SDK's log messages to slog.
type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	msg := "s3store: aws sdk: " + fmt.Sprintf(format, v...)
	if c == logging.Warn {
		l.log.Warn(msg)
		return
	}
	l.log.Debug(msg)
}
