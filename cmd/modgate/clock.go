package main

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/modgate/modgate/audit"
)

// faultClockEnv enables stepping the gateway's clock over the admin
// listener: fault injection, for tests and drills, never for production.
const faultClockEnv = "MODGATE_FAULT_CLOCK"

// A wallClock is a gateway's one clock, handed to every part that keeps
// time (the processor and its audit timestamps, the cache's TTLs, the
// cooldown's anchors, the failure and miss budgets, upstream health, the
// vulnerability data's age, the console): time.Now plus an offset that
// only fault injection moves, to show what a step of the wall clock (an
// NTP correction, a resumed VM) does to all of them at once.
type wallClock struct {
	offset atomic.Int64 // nanoseconds
}

// Now is time.Now, stepped by the offset. A nil *wallClock is time.Now.
func (c *wallClock) Now() time.Time {
	if c == nil {
		return time.Now()
	}
	return time.Now().Add(time.Duration(c.offset.Load()))
}

// maxClockStep bounds one step of the fault clock.
const maxClockStep = 30 * 24 * time.Hour

// stepClock serves POST /debug/clock?step=DURATION (guarded, and only
// with MODGATE_FAULT_CLOCK=1): the clock jumps by DURATION, forward or
// back. The step is logged and audited.
func (g *standalone) stepClock(w http.ResponseWriter, r *http.Request) {
	d, err := time.ParseDuration(r.URL.Query().Get("step"))
	if err != nil || d > maxClockStep || d < -maxClockStep {
		http.Error(w, fmt.Sprintf("step=%q: want a duration within ±%s, such as 2h", r.URL.Query().Get("step"), maxClockStep), http.StatusBadRequest)
		return
	}
	before := g.clock.Now()
	g.clock.offset.Add(int64(d))
	g.log.Warn("fault injection: the clock stepped", "step", d, "offset", time.Duration(g.clock.offset.Load()))
	ev := &audit.Event{
		Timestamp: g.clock.Now().UTC(),
		Event:     audit.EventFields{Action: "clock-step", Outcome: audit.OutcomeSuccess, Reason: fmt.Sprintf("fault injection: the clock stepped by %s from %s", d, before.UTC().Format(time.RFC3339))},
	}
	if err := g.audit.Record(ev); err != nil {
		g.log.Error("audit event not recorded", "err", err)
	}
	fmt.Fprintf(w, "clock stepped by %s: now %s\n", d, g.clock.Now().UTC().Format(time.RFC3339))
}

// Since is the time elapsed since t, a time of this clock.
func (c *wallClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
