package natsserver_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/modgate/modgate/integration/natsserver"
)

// TestRestart checks that the server serves JetStream, that Stop makes
// it unreachable, and that Restart brings it back on the same URL with
// its file-stored streams.
func TestRestart(t *testing.T) {
	s := natsserver.Start(t)
	js := connect(t, s.URL)
	if _, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "b", Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("CreateKeyValue = %v", err)
	}

	s.Stop()
	s.Stop() // again: does nothing
	if nc, err := nats.Connect(s.URL); err == nil {
		nc.Close()
		t.Fatalf("Connect(%s) after Stop = nil error, want one", s.URL)
	}

	s.Restart(t)
	js = connect(t, s.URL)
	if _, err := js.KeyValue(t.Context(), "b"); err != nil {
		t.Errorf("KeyValue(b) after Restart = %v, want the bucket kept", err)
	}
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("Connect(%s) = %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New = %v", err)
	}
	return js
}
