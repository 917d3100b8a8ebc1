package envoyemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// hopByHop are the connection-specific headers Envoy never forwards.
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}

// respond runs the upstream response through ext_proc per the processing
// mode and sends it downstream.
func (t *transaction) respond(ctx context.Context, up *http.Response) error {
	h := headerMap{{":status", strconv.Itoa(up.StatusCode)}}
	h = append(h, fromHTTP(up.Header)...)
	for _, k := range hopByHop {
		h = h.del(k)
	}
	t.respHeader = h
	noBody := t.req.Method == http.MethodHead || up.StatusCode == http.StatusNoContent ||
		up.StatusCode == http.StatusNotModified || up.ContentLength == 0

	if t.x.active() && t.mode.GetResponseHeaderMode() != procmodev3.ProcessingMode_SKIP {
		msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: t.respHeader.proto(), EndOfStream: noBody},
		}}
		t.decorate(msg, dirResponse)
		reply, err := t.roundTrip(ctx, msg, kindResponseHeaders)
		if err != nil {
			return err
		}
		if reply != nil {
			if err := t.onReply(reply, true); err != nil {
				return err
			}
			cr := reply.GetResponseHeaders().GetResponse()
			if mut := cr.GetHeaderMutation(); mut != nil {
				if err := t.mutate(&t.respHeader, mutationRules{phase: "response_headers", pseudo: ":status"}, mut); err != nil {
					return err
				}
			}
			if cr.GetClearRouteCache() {
				t.ignored = append(t.ignored, "response_headers: clear_route_cache")
			}
			if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
				// The reply's body replaces the upstream body, which is
				// not sent to ext_proc.
				body, _, err := mutateBody(nil, cr.GetBodyMutation())
				if err != nil {
					return err
				}
				t.respHeader = t.respHeader.del("content-length")
				t.sendHeaders()
				t.body = append(t.body, body...)
				return nil
			}
		}
	}

	mode := t.mode.GetResponseBodyMode()
	if noBody || !t.x.active() {
		mode = procmodev3.ProcessingMode_NONE
	}
	switch mode {
	case procmodev3.ProcessingMode_NONE:
		t.sendHeaders()
		return t.copyRest(ctx, up.Body)
	case procmodev3.ProcessingMode_STREAMED:
		return t.streamed(ctx, up.Body)
	case procmodev3.ProcessingMode_BUFFERED:
		return t.buffered(ctx, up.Body, false)
	case procmodev3.ProcessingMode_BUFFERED_PARTIAL:
		return t.buffered(ctx, up.Body, true)
	}
	return fmt.Errorf("response_body_mode %v is not emulated", mode)
}

// copyRest sends the rest of the upstream body downstream without ext_proc.
func (t *transaction) copyRest(ctx context.Context, body io.Reader) error {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, body)
	t.body = append(t.body, buf.Bytes()...)
	if err != nil {
		return upstreamBodyError(ctx, err)
	}
	return nil
}

// upstreamBodyError maps a failed upstream body read: the router has
// started the response, so Envoy can only reset the stream.
func upstreamBodyError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return &abort{status: http.StatusGatewayTimeout, details: "upstream_response_timeout", reset: true}
	}
	return &abort{status: http.StatusBadGateway, details: "upstream_reset_after_response_started", reset: true}
}

// buffered handles BUFFERED and BUFFERED_PARTIAL: the headers are held until
// the body reply. A BUFFERED body over BufferLimit is a 500 to the client;
// BUFFERED_PARTIAL sends the first BufferLimit bytes with end_of_stream
// false and lets the rest through without ext_proc (ENVOY.md).
func (t *transaction) buffered(ctx context.Context, body io.Reader, partial bool) error {
	limit := t.cfg.BufferLimit
	data, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		return upstreamBodyError(ctx, err)
	}
	truncated := len(data) > limit
	if truncated && !partial {
		return &abort{status: http.StatusInternalServerError, details: "buffer_limit"}
	}
	rest := io.Reader(bytes.NewReader(nil))
	if truncated {
		rest = io.MultiReader(bytes.NewReader(data[limit:]), body)
		data = data[:limit]
	}
	msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: data, EndOfStream: !truncated},
	}}
	t.decorate(msg, dirResponse)
	reply, err := t.roundTrip(ctx, msg, kindResponseBody)
	if err != nil {
		return err
	}
	mutated := false
	if reply != nil {
		if err := t.onReply(reply, false); err != nil {
			return err
		}
		cr := reply.GetResponseBody().GetResponse()
		if mut := cr.GetHeaderMutation(); mut != nil { // headers are still held
			if err := t.mutate(&t.respHeader, mutationRules{phase: "response_body", pseudo: ":status"}, mut); err != nil {
				return err
			}
		}
		if data, mutated, err = mutateBody(data, cr.GetBodyMutation()); err != nil {
			return err
		}
	}
	// processing_mode.proto: Envoy drops content-length for
	// BUFFERED_PARTIAL and for BUFFERED without header processing; for
	// BUFFERED with headers SEND the processor must keep it right, or the
	// body mutation is rejected with a local reply.
	switch {
	case partial || t.mode.GetResponseHeaderMode() == procmodev3.ProcessingMode_SKIP:
		t.respHeader = t.respHeader.del("content-length")
	case mutated:
		if cl, ok := t.respHeader.get("content-length"); ok && cl != strconv.Itoa(len(data)) {
			return &abort{status: http.StatusInternalServerError, details: "content_length_mismatch"}
		}
	}
	t.sendHeaders()
	t.body = append(t.body, data...)
	return t.copyRest(ctx, rest)
}

// chunk is a STREAMED body chunk waiting for its reply.
type chunk struct {
	data []byte
	eos  bool
}

// streamed handles STREAMED: the headers go downstream after their reply
// (without content-length), then chunks of ChunkSize are sent with up to
// Pipeline outstanding; a chunk goes downstream only with its reply, in
// order (ENVOY.md). A body ending on a chunk boundary ends with an empty
// chunk carrying end_of_stream.
func (t *transaction) streamed(ctx context.Context, body io.Reader) error {
	t.respHeader = t.respHeader.del("content-length")
	t.sendHeaders()
	var queue []chunk
	eosRead := false
	for {
		for !eosRead && len(queue) < t.cfg.Pipeline && t.x.active() {
			buf := make([]byte, t.cfg.ChunkSize)
			n, err := io.ReadFull(body, buf)
			switch {
			case err == nil:
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				eosRead = true
			default:
				return upstreamBodyError(ctx, err)
			}
			c := chunk{data: buf[:n], eos: eosRead}
			msg := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
				ResponseBody: &extprocv3.HttpBody{Body: c.data, EndOfStream: c.eos},
			}}
			t.decorate(msg, dirResponse)
			if _, err := t.x.send(ctx, msg, kindResponseBody); err != nil {
				return err
			}
			queue = append(queue, c) // if unsent, the stream closed: it passes below
		}
		if len(queue) == 0 {
			break
		}
		reply, err := t.x.await(ctx)
		if err != nil {
			return err
		}
		if reply == nil { // processor gone: outstanding chunks continue as they are
			for _, c := range queue {
				t.body = append(t.body, c.data...)
			}
			queue = nil
			continue
		}
		if err := t.onReply(reply, false); err != nil {
			return err
		}
		cr := reply.GetResponseBody().GetResponse()
		if cr.GetHeaderMutation() != nil {
			t.ignored = append(t.ignored, "response_body: header_mutation after headers went downstream")
		}
		data, _, err := mutateBody(queue[0].data, cr.GetBodyMutation())
		if err != nil {
			return err
		}
		t.body = append(t.body, data...)
		queue = queue[1:]
		if t.chunksOut++; t.req.ResetAfterChunks > 0 && t.chunksOut >= t.req.ResetAfterChunks {
			return &abort{reset: true, details: "downstream_remote_disconnect"}
		}
	}
	if !eosRead {
		return t.copyRest(ctx, body)
	}
	return nil
}

// mutateBody applies a BodyMutation. streamed_response belongs to
// FULL_DUPLEX_STREAMED only: anywhere else it fails closed.
func mutateBody(data []byte, bm *extprocv3.BodyMutation) ([]byte, bool, error) {
	switch m := bm.GetMutation().(type) {
	case *extprocv3.BodyMutation_Body:
		return m.Body, true, nil
	case *extprocv3.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil, true, nil
		}
	case *extprocv3.BodyMutation_StreamedResponse:
		return nil, false, failClosed("spurious_message")
	}
	return data, false, nil
}

// streamedImmediate serves a StreamedImmediateResponse (Envoy ≥ 1.37):
// only as a reply to request headers, only with response body mode NONE
// (ENVOY.md). Its headers go downstream at once; body chunks follow as
// further messages, each within the message timeout.
func (t *transaction) streamedImmediate(ctx context.Context, sir *extprocv3.StreamedImmediateResponse) error {
	if t.mode.GetResponseBodyMode() != procmodev3.ProcessingMode_NONE {
		return failClosed("spurious_message")
	}
	hr := sir.GetHeadersResponse()
	if hr == nil {
		return failClosed("spurious_message")
	}
	var h headerMap
	for _, hv := range hr.GetHeaders().GetHeaders() {
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return failClosed("invalid_header_mutation: both value and raw_value")
		}
		h = h.add(hv.GetKey(), string(hv.GetRawValue()))
	}
	s, _ := h.get(":status")
	if code, err := strconv.Atoi(s); err != nil || code < 200 || code > 599 {
		return failClosed("invalid_streamed_immediate_response")
	}
	t.respHeader = h
	t.localReply = true
	t.details = "streamed_immediate_response"
	t.sendHeaders()
	if hr.GetEndOfStream() {
		return nil
	}
	for {
		m, err := t.x.next(ctx)
		if err != nil {
			return err
		}
		switch r := m.GetStreamedImmediateResponse().GetResponse().(type) {
		case *extprocv3.StreamedImmediateResponse_BodyResponse:
			t.body = append(t.body, r.BodyResponse.GetBody()...)
			if r.BodyResponse.GetEndOfStream() {
				return nil
			}
		case *extprocv3.StreamedImmediateResponse_TrailersResponse:
			return nil
		default:
			return failClosed("spurious_message")
		}
	}
}
