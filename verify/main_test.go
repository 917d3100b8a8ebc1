package verify

import (
	"testing"

	"github.com/modgate/modgate/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
