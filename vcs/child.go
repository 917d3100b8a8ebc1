package vcs

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// maxOutput bounds what is read of a child's standard output and of its
// standard error; the rest is discarded.
const maxOutput = 1 << 20

// waitDelay bounds how long Wait waits after the child was killed.
const waitDelay = 5 * time.Second

// A childResult is what a go command run left behind.
type childResult struct {
	stdout, stderr []byte
	truncated      bool  // stdout was longer than maxOutput
	err            error // the exit error, nil on success
}

// run runs the go command with args once a slot is free, for at most
// Config.Timeout, and returns its output. It fails with a *fetchError of
// kind errTimeout when the timeout expires, errClosed when the origin
// closes, and errCanceled when ctx ends otherwise (also while waiting for
// a slot); a go command that runs and fails is not an error here but a
// childResult with err set. The child runs in a process group of its
// own, which is killed whole when it times out and as soon as the go
// command exits, so that nothing it started outlives it.
func (o *Origin) run(ctx context.Context, args ...string) (*childResult, error) {
	select {
	case o.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, o.ctxError(ctx)
	}
	defer func() { <-o.slots }()
	o.running.RLock()
	defer o.running.RUnlock()

	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, o.goCmd, args...)
	cmd.Dir = o.work
	cmd.Env = o.env
	cmd.WaitDelay = waitDelay
	setGroup(cmd)

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, &fetchError{kind: errFailed, msg: "pipe: " + err.Error()}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, &fetchError{kind: errFailed, msg: "pipe: " + err.Error()}
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	var stdout, stderr capped
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); stdout.readFrom(outR) }()
	go func() { defer readers.Done(); stderr.readFrom(errR) }()

	start := time.Now()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		readers.Wait()
		return nil, &fetchError{kind: errFailed, msg: "start the go command: " + o.relative(err.Error())}
	}
	pgid := cmd.Process.Pid
	o.mu.Lock()
	started := o.started
	o.mu.Unlock()
	if started != nil {
		started(pgid)
	}
	err = cmd.Wait()
	// Whatever the go command left running goes with it; this also ends
	// the readers, whose pipes the stragglers may hold open.
	killGroup(pgid)
	readers.Wait()
	outR.Close()
	errR.Close()
	o.log.Debug("vcs: ran go", "args", strings.Join(args, " "), "duration", time.Since(start), "err", err)

	switch {
	case ctx.Err() != nil:
		return nil, o.ctxError(ctx)
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		return nil, &fetchError{kind: errTimeout}
	}
	return &childResult{stdout: stdout.buf, stderr: stderr.buf, truncated: stdout.over, err: err}, nil
}

// ctxError returns the error for a run whose context ended: errClosed
// after Close, errCanceled otherwise.
func (o *Origin) ctxError(ctx context.Context) error {
	select {
	case <-o.stop:
		return &fetchError{kind: errClosed}
	default:
	}
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return &fetchError{kind: errClosed}
	}
	return &fetchError{kind: errCanceled, msg: context.Cause(ctx).Error()}
}

// capped keeps the first maxOutput bytes read and discards the rest.
type capped struct {
	buf  []byte
	over bool
}

// readFrom reads r to its end.
func (c *capped) readFrom(r io.Reader) {
	data, _ := io.ReadAll(io.LimitReader(r, maxOutput+1))
	if len(data) > maxOutput {
		data, c.over = data[:maxOutput], true
	}
	c.buf = data
	io.Copy(io.Discard, r)
}
