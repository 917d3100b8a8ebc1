package s3server

import (
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestServer checks what tests rely on: credentials from Setenv through
// the SDK's standard chain, an outage with Stop, and the data kept by
// Restart.
func TestServer(t *testing.T) {
	srv := Start(t, "modgate-harness")
	srv.Setenv(t)

	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.Endpoint)
		o.UsePathStyle = true
		o.RetryMaxAttempts = 1
	})
	put := func(key, body string) error {
		_, err := client.PutObject(t.Context(), &s3.PutObjectInput{Bucket: &srv.Bucket, Key: &key, Body: strings.NewReader(body)})
		return err
	}
	get := func(key string) (string, error) {
		out, err := client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &srv.Bucket, Key: &key})
		if err != nil {
			return "", err
		}
		defer out.Body.Close()
		data, err := io.ReadAll(out.Body)
		return string(data), err
	}

	if err := put("kept", "kept"); err != nil {
		t.Fatalf("PutObject = %v", err)
	}
	srv.Stop(t)
	srv.Stop(t)
	if _, err := get("kept"); err == nil {
		t.Errorf("GetObject while stopped = nil, want error")
	}
	srv.Restart(t)
	if got, err := get("kept"); err != nil || got != "kept" {
		t.Errorf("after Restart, GetObject = %q, %v, want %q", got, err, "kept")
	}
	if err := put("new", "new"); err != nil {
		t.Errorf("after Restart, PutObject = %v", err)
	}
}

func TestMissingBinary(t *testing.T) {
	skipped := false
	t.Run("start", func(t *testing.T) {
		t.Setenv("MODGATE_S3_SERVER", "/nonexistent/versitygw")
		defer func() { skipped = t.Skipped() }()
		Start(t, "modgate-harness")
	})
	if !skipped {
		t.Errorf("Start without a binary did not skip")
	}
}
