// Package natsserver runs a real NATS server for tests: the embedded
// nats-server (github.com/nats-io/nats-server/v2/server), with JetStream,
// listening on 127.0.0.1 on a free port, its store in t.TempDir(). Tests
// cause outages with [Server.Stop] and end them with [Server.Restart],
// which starts a new server on the same port and store directory, so
// clients that reconnect find it again. Memory-stored streams, such as
// the fill-lease bucket of package coord, do not survive a restart;
// file-stored ones do. The server is shut down at t's cleanup.
package natsserver

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long Start and Restart wait for the server to
// accept connections.
const readyTimeout = 10 * time.Second

// A Server is a running NATS server; see [Start].
type Server struct {
	URL  string // "nats://127.0.0.1:PORT"
	Port int

	dir string // JetStream store

	mu  sync.Mutex
	srv *server.Server // nil while stopped
}

// Start runs a NATS server with JetStream on 127.0.0.1 and a free port,
// and waits until it accepts connections. It is shut down at t's cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir()}
	srv, err := s.run(server.RANDOM_PORT)
	if err != nil {
		t.Fatalf("natsserver: %v", err)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		t.Fatalf("natsserver: listener address %v is not TCP", srv.Addr())
	}
	s.Port = addr.Port
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.Port)
	s.srv = srv
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits until it is down: clients see an
// outage. It does nothing if the server is already stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart starts the server again, on the same port and store directory,
// and waits until it accepts connections. The server must be stopped.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		t.Fatal("natsserver: Restart of a running server")
	}
	srv, err := s.run(s.Port)
	if err != nil {
		t.Fatalf("natsserver: restart: %v", err)
	}
	s.srv = srv
}

// run starts a server on port, with JetStream in s.dir, and waits until it
// is ready for connections.
func (s *Server) run(port int) (*server.Server, error) {
	opts := &server.Options{
		Host:               "127.0.0.1",
		Port:               port,
		NoLog:              true,
		NoSigs:             true,
		JetStream:          true,
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  256 << 20,
		StoreDir:           s.dir,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("not ready for connections on port %d after %v", port, readyTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("JetStream is not enabled on port %d", port)
	}
	return srv, nil
}
