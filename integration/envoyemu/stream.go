package envoyemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// abort ends a request early. Transaction.fail turns it into a local reply,
// or into a reset when the response headers have already gone downstream.
type abort struct {
	status  int
	details string
	header  headerMap // for immediate responses
	body    []byte
	reset   bool // reset even if no headers went downstream (upstream reset)
}

func (a *abort) Error() string { return fmt.Sprintf("local reply %d (%s)", a.status, a.details) }

// failClosed is the local reply for an ext_proc failure with
// failure_mode_allow false (ENVOY.md: "fail closed").
func failClosed(details string) *abort {
	return &abort{status: http.StatusInternalServerError, details: details}
}

// grpcFailure maps a stream error to Envoy's local reply:
// "ext_proc_error_gRPC_error_<code>".
func grpcFailure(err error) *abort {
	return failClosed(fmt.Sprintf("ext_proc_error_gRPC_error_%d", status.Code(err)))
}

// msgKind is the kind of a message Envoy sent, and so of the reply it needs.
type msgKind int

const (
	kindRequestHeaders msgKind = iota + 1
	kindResponseHeaders
	kindResponseBody
)

func (k msgKind) String() string {
	switch k {
	case kindRequestHeaders:
		return "request_headers"
	case kindResponseHeaders:
		return "response_headers"
	case kindResponseBody:
		return "response_body"
	}
	return "unknown"
}

// replyKind reports which message kind resp answers; 0 for an
// ImmediateResponse (valid at any point) and -1 for anything else.
func replyKind(resp *extprocv3.ProcessingResponse) msgKind {
	switch resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return kindRequestHeaders
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return kindResponseHeaders
	case *extprocv3.ProcessingResponse_ResponseBody:
		return kindResponseBody
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return 0
	case *extprocv3.ProcessingResponse_StreamedImmediateResponse:
		return kindRequestHeaders // only valid as a reply to request headers
	}
	return -1 // empty response or a phase the emulator never asks for
}

// received is one result of stream.Recv.
type received struct {
	msg *extprocv3.ProcessingResponse
	err error
}

// outstanding is a message waiting for its reply, with its own timer
// (ENVOY.md: "the per-message timer runs per outstanding chunk").
type outstanding struct {
	kind     msgKind
	deadline time.Time
}

// exchange is the Process stream of one request. Only the goroutine running
// the transaction uses it; the receive goroutine owns nothing but the send
// side of replies.
type exchange struct {
	stream     extprocv3.ExternalProcessor_ProcessClient
	cancel     context.CancelFunc
	replies    chan received // fed by receive; closed when it returns
	timeout    time.Duration
	maxTimeout time.Duration

	pending []outstanding // oldest first; replies arrive in this order
	sent    int
	// closed means the server ended the stream with status OK: Envoy
	// proceeds without consulting it (external_processor.proto).
	closed bool
	ended  bool // the receive goroutine has delivered its final result
}

// openExchange opens the Process stream. A failure to open is a fail-closed
// local reply.
func openExchange(ctx context.Context, client extprocv3.ExternalProcessorClient, cfg *Config) (*exchange, error) {
	// The stream ends with the request, but Envoy does not pass the
	// client's deadline on to the processor: no grpc-timeout.
	sctx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancelStream)
	cancel := func() { stop(); cancelStream() }
	// Envoy's max_receive_message_length defaults to unlimited.
	stream, err := client.Process(sctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, grpcFailure(err)
	}
	x := &exchange{
		stream:     stream,
		cancel:     cancel,
		replies:    make(chan received, 8),
		timeout:    cfg.MessageTimeout,
		maxTimeout: cfg.MaxMessageTimeout,
	}
	go x.receive(sctx)
	return x, nil
}

// receive forwards every reply until the stream ends or ctx is canceled.
func (x *exchange) receive(ctx context.Context) {
	defer close(x.replies)
	for {
		msg, err := x.stream.Recv()
		select {
		case x.replies <- received{msg, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// active reports whether Envoy still talks to the processor.
func (x *exchange) active() bool { return !x.closed }

// send sends one message that needs a reply of kind. It reports false when
// the server had already closed the stream cleanly (nothing was sent, Envoy
// carries on without ext_proc).
func (x *exchange) send(ctx context.Context, req *extprocv3.ProcessingRequest, kind msgKind) (bool, error) {
	if x.closed {
		return false, nil
	}
	if len(x.pending) == 0 {
		// Anything that arrived while no message was outstanding is a
		// spurious reply, or the stream ending.
		select {
		case r, ok := <-x.replies:
			if err := x.idle(r, ok); err != nil || x.closed {
				return false, err
			}
		default:
		}
	}
	if err := x.stream.Send(req); err != nil {
		// The stream is broken; its status comes from Recv.
		return false, x.broken(ctx)
	}
	x.sent++
	x.pending = append(x.pending, outstanding{kind: kind, deadline: time.Now().Add(x.timeout)})
	return true, nil
}

// idle handles something received while no message was outstanding.
func (x *exchange) idle(r received, ok bool) error {
	switch {
	case !ok:
		x.closed, x.ended = true, true
		return nil
	case r.err != nil:
		return x.end(r.err)
	case r.msg.GetOverrideMessageTimeout() != nil:
		return nil // no timer running: Envoy ignores it
	default:
		return failClosed("spurious_message")
	}
}

// broken waits for the status of a stream whose Send failed.
func (x *exchange) broken(ctx context.Context) error {
	timer := time.NewTimer(x.timeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return failClosed("ext_proc_error_gRPC_error_send")
		case r, ok := <-x.replies:
			if !ok {
				x.closed, x.ended = true, true
				return nil
			}
			if r.err != nil {
				return x.end(r.err)
			}
			// Replies racing the failure are dropped with the stream.
		}
	}
}

// end records the stream's final status. io.EOF is the server closing the
// stream with status OK: processing is complete and Envoy carries on.
func (x *exchange) end(err error) error {
	x.ended = true
	if errors.Is(err, io.EOF) {
		x.closed = true
		x.pending = nil
		return nil
	}
	return grpcFailure(err)
}

// await returns the reply to the oldest outstanding message. A nil reply
// with a nil error means the server closed the stream cleanly: the message
// goes on unmodified. Wrong-type replies fail closed (ENVOY.md, 1.35+); a
// missing reply is a message timeout (504).
func (x *exchange) await(ctx context.Context) (*extprocv3.ProcessingResponse, error) {
	if x.closed {
		return nil, nil
	}
	for {
		head := x.pending[0]
		timer := time.NewTimer(time.Until(head.deadline))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
			return nil, &abort{status: http.StatusGatewayTimeout, details: "message_timeout"}
		case r, ok := <-x.replies:
			timer.Stop()
			if !ok {
				x.closed, x.ended, x.pending = true, true, nil
				return nil, nil
			}
			if r.err != nil {
				return nil, x.end(r.err)
			}
			if d := r.msg.GetOverrideMessageTimeout(); d != nil {
				// Envoy handles the override and ignores the rest of the
				// message.
				x.override(d.AsDuration())
				continue
			}
			if k := replyKind(r.msg); k != 0 && k != head.kind {
				return nil, failClosed("spurious_message")
			}
			x.pending = x.pending[1:]
			return r.msg, nil
		}
	}
}

// override restarts the timers of the outstanding messages with d, if
// max_message_timeout allows it; otherwise Envoy ignores it.
func (x *exchange) override(d time.Duration) {
	if x.maxTimeout <= 0 || d < 0 || d > x.maxTimeout {
		return
	}
	deadline := time.Now().Add(d)
	for i := range x.pending {
		x.pending[i].deadline = deadline
	}
}

// next waits up to the message timeout for an unsolicited follow-up
// message (StreamedImmediateResponse body chunks).
func (x *exchange) next(ctx context.Context) (*extprocv3.ProcessingResponse, error) {
	timer := time.NewTimer(x.timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, &abort{status: http.StatusGatewayTimeout, details: "message_timeout"}
	case r, ok := <-x.replies:
		if !ok {
			x.closed, x.ended = true, true
			return nil, failClosed("ext_proc_error_gRPC_error_0")
		}
		if r.err != nil {
			if err := x.end(r.err); err != nil {
				return nil, err
			}
			return nil, failClosed("ext_proc_error_gRPC_error_0")
		}
		return r.msg, nil
	}
}

// close ends the stream. After a normal end it half-closes the stream and
// drains it for a moment so the server sees io.EOF; then it cancels the
// stream (Envoy closes and resets it at the end, ENVOY.md). Anything
// received now is ignored: processing is complete.
func (x *exchange) close(graceful bool) {
	if graceful && !x.ended {
		_ = x.stream.CloseSend()
		grace := time.NewTimer(x.timeout)
	drain:
		for {
			select {
			case r, ok := <-x.replies:
				if !ok || r.err != nil {
					break drain
				}
			case <-grace.C:
				break drain
			}
		}
		grace.Stop()
	}
	x.cancel()
	for range x.replies {
	}
}
