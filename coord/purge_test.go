package coord

import (
	"testing"
	"time"

	"github.com/modgate/modgate/integration/natsserver"
)

// TestPurge: a purge published by one replica reaches the others, not
// itself; a malformed message reaches nobody.
func TestPurge(t *testing.T) {
	srv := natsserver.Start(t)
	rs := replicas(t, srv.URL, 3, time.Second)
	type got struct{ module, version, origin string }
	seen := make([]chan got, len(rs))
	for i, r := range rs {
		seen[i] = make(chan got, 4)
		if err := r.OnPurge(func(m, v, o string) { seen[i] <- got{m, v, o} }); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs[0].nc.Publish(rs[0].purgeSubject(), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := rs[0].PublishPurge(t.Context(), "example.com/m", "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(rs); i++ {
		select {
		case g := <-seen[i]:
			if g != (got{"example.com/m", "v1.0.0", rs[0].name}) {
				t.Errorf("replica %d got %+v", i, g)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("replica %d got no purge", i)
		}
	}
	select {
	case g := <-seen[0]:
		t.Errorf("the publisher got its own purge: %+v", g)
	case <-time.After(100 * time.Millisecond):
	}
	for i := 1; i < len(rs); i++ {
		select {
		case g := <-seen[i]:
			t.Errorf("replica %d got a second purge (the malformed one?): %+v", i, g)
		default:
		}
	}
}
