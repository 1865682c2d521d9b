package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHangupLeavesTheRegionServing: SIGHUP (a closed terminal, or an
// operator expecting a reload) neither kills a region, which Go's default
// would do as an unclean stop, nor stops it: the region logs that it
// ignored the signal, goes on serving writes, and a later SIGTERM is
// still a clean stop.
func TestHangupLeavesTheRegionServing(t *testing.T) {
	c := startProcCluster(t)
	c.add("us-east", "hup", "book", 1)
	c.signal("us-east", syscall.SIGHUP)
	pollUntil(t, 10*time.Second, "us-east to log the ignored SIGHUP", func() bool {
		return strings.Contains(c.children["us-east"].logTail(), "SIGHUP ignored")
	})
	select {
	case code := <-c.children["us-east"].exited:
		t.Fatalf("us-east exited with status %d after SIGHUP\n%s", code, c.children["us-east"].logTail())
	default:
	}
	c.add("us-east", "hup", "pen", 2)
	if _, qty := c.items("us-east", "hup"); qty["book"] != 1 || qty["pen"] != 2 {
		t.Fatalf("cart after SIGHUP: %v, want book 1 and pen 2", qty)
	}
	c.terminate("us-east")
}
