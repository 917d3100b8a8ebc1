// Package s3server runs a real S3 server for tests: Versity's S3 gateway
// (versitygw, Apache 2.0) over a POSIX directory, on 127.0.0.1, with its
// data in a temporary directory of the test, static credentials, and a
// bucket. No in-memory fake: conditional writes, multipart uploads and
// listings behave as a real server makes them. (An earlier version of the
// s3store suite also passed against SeaweedFS, whose binary takes over ten
// minutes to build here; versitygw's takes under two.)
//
// The binary is $MODGATE_S3_SERVER, or else
// ${XDG_CACHE_HOME:-$HOME/.cache}/modgate-test/bin/versitygw, which `make
// test` builds with build.sh (a pinned version). Without it, [Start] skips
// the test. A server starts in well under a second.
//
// versitygw reads no configuration of the user's (its HOME and working
// directory are the temporary directory, its environment holds only HOME
// and TMPDIR), reports nothing anywhere, and listens on 127.0.0.1 only, on
// a port below Linux's ephemeral range, so that a restart finds it still
// free.
//
// Clients get the credentials from [Server.Env] (child processes) or
// [Server.Setenv] (this process), which also keep the AWS SDK away from
// the user's ~/.aws and from instance metadata. [Server.Stop] and
// [Server.Restart] make an outage and end it, with the data kept.
package s3server

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modgate/modgate/integration/helperbin"
)

// A Server is a running (or stopped) S3 server; see [Start].
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT"
	Bucket    string // the bucket Start created
	AccessKey string // static credentials of an identity with every permission
	SecretKey string
	Region    string // "us-east-1"; the server ignores it, but signatures carry it

	bin     string   // the server's binary
	dir     string   // data, HOME and working directory of the server
	logFile string   // the server's standard output and error
	args    []string // the server's arguments
	client  *s3.Client

	mu   sync.Mutex
	cmd  *exec.Cmd     // the running server, nil when stopped
	done chan struct{} // closed when cmd has exited
}

// Start starts a server with bucket created and returns it when it takes
// writes. It skips t if the binary is missing, and stops the server at t's
// cleanup.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	bin := Binary()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Skipf("s3server: no S3 server binary at %s (set MODGATE_S3_SERVER, or run `make test`, which builds versitygw with integration/s3server/build.sh)", bin)
	}
	s := &Server{
		Bucket:    bucket,
		AccessKey: "modgate-test",
		SecretKey: crand.Text(),
		Region:    "us-east-1",
		bin:       bin,
		dir:       t.TempDir(),
	}
	s.logFile = filepath.Join(s.dir, "server.log")
	data := filepath.Join(s.dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("s3server: %v", err)
	}
	port, err := helperbin.FreePort(nil)
	if err != nil {
		t.Fatalf("s3server: %v", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s.Endpoint = "http://" + addr
	s.args = []string{
		"--port", addr,
		"--access", s.AccessKey,
		"--secret", s.SecretKey,
		"--region", s.Region,
		"posix", data,
	}
	s.client = s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Region:       s.Region,
		Credentials:  aws.CredentialsProviderFunc(s.credentials),
		Retryer:      aws.NopRetryer{},
	})
	t.Cleanup(func() { s.cleanup(t) })

	begin := time.Now()
	s.start(t)
	s.waitReady(t, func(ctx context.Context) error {
		_, err := s.client.ListBuckets(ctx, &s3.ListBucketsInput{})
		return err
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.Bucket}); err != nil {
		t.Fatalf("s3server: create bucket %s: %v%s", s.Bucket, err, helperbin.LogTail(s.logFile, "S3 server"))
	}
	s.waitReady(t, s.probe)
	t.Logf("s3server: %s (bucket %s) ready in %v", s.Endpoint, s.Bucket, time.Since(begin).Round(time.Millisecond))
	return s
}

// Binary returns the path of the server binary Start runs:
// $MODGATE_S3_SERVER, or versitygw where make test builds it.
func Binary() string { return helperbin.Path("MODGATE_S3_SERVER", "versitygw") }

// Env returns the environment variables an AWS SDK client in a child
// process needs for the server: its credentials and region, and settings
// that keep the SDK away from the user's ~/.aws, profiles and session
// token, and from instance metadata. The endpoint is not among them.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_SESSION_TOKEN=",
		"AWS_REGION=" + s.Region,
		"AWS_PROFILE=",
		"AWS_DEFAULT_PROFILE=",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Setenv sets the variables of [Server.Env] in this process for the
// duration of t, for clients built in the test.
func (s *Server) Setenv(t *testing.T) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Stop stops the server as a crash would (SIGKILL), and keeps its data
// for [Server.Restart]. Stopping a stopped server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("s3server: stop: %v", err)
	}
}

// Restart starts a stopped server again, on the same port and data, and
// returns when it takes writes.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	begin := time.Now()
	s.start(t)
	s.waitReady(t, s.probe)
	t.Logf("s3server: %s restarted in %v", s.Endpoint, time.Since(begin).Round(time.Millisecond))
}

// start starts the server, which must be stopped.
func (s *Server) start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatalf("s3server: start: already running")
	}
	log, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("s3server: %v", err)
	}
	defer log.Close()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"HOME=" + s.dir, "TMPDIR=" + s.dir}
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = helperbin.SysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("s3server: start %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
}

// stop kills the server and waits for it to exit.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	cmd.Process.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("the S3 server (pid %d) does not exit", cmd.Process.Pid)
	}
}

// cleanup stops the server.
func (s *Server) cleanup(t testing.TB) {
	if err := s.stop(); err != nil {
		t.Errorf("s3server: stop: %v", err)
	}
	if t.Failed() {
		t.Logf("s3server: the server's log:%s", helperbin.LogTail(s.logFile, "S3 server"))
	}
}

// waitReady waits until ready succeeds, polling for at most 30s, and fails
// t if it does not, or if the server exits.
func (s *Server) waitReady(t testing.TB, ready func(context.Context) error) {
	t.Helper()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	const attempts, every = 300, 100 * time.Millisecond
	var err error
	for range attempts {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err = ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("s3server: the server exited while starting%s", helperbin.LogTail(s.logFile, "S3 server"))
		case <-time.After(every):
		}
	}
	t.Fatalf("s3server: not ready after %v: %v%s", attempts*every, err, helperbin.LogTail(s.logFile, "S3 server"))
}

// probe writes and deletes an object, .s3server-probe at the root of the
// bucket: the server takes writes.
func (s *Server) probe(ctx context.Context) error {
	key := ".s3server-probe"
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.Bucket, Key: &key, Body: strings.NewReader("probe")})
	if err != nil {
		return err
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: &key})
	return err
}

func (s *Server) credentials(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey, Source: "s3server"}, nil
}
