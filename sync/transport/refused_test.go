package transport

import (
	"sync"
	"testing"
	"time"
)

// refusalRecorder is a recorder that also hears of refusals.
type refusalRecorder struct {
	*recorder
	mu      sync.Mutex
	refused map[string]int
}

func (r *refusalRecorder) OnRefused(peer string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused[peer]++
}

func (r *refusalRecorder) count(peer string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused[peer]
}

// TestQUICReportsRefusalByPeer: a region that a peer does not count among
// its own (removed from its config) hears, when it dials, that the peer
// refused it (RefusalObserver) — what region.Node.PeerRefused needs to
// stop deciding as a home. A peer that is down refuses nothing.
func TestQUICReportsRefusalByPeer(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west", "ap-south")
	pcUS, pcAP, pcEU := udp(t), udp(t), udp(t)
	down := pcEU.LocalAddr().String()
	pcEU.Close() // eu-west is down
	// us-east's config has no ap-south; ap-south's still names us-east.
	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west": down})
	cfgAP, _ := testConfig(t, dir, "ap-south", map[string]string{"us-east": pcUS.LocalAddr().String(), "eu-west": down})
	start(t, pcUS, cfgUS, newRecorder())
	ap := &refusalRecorder{recorder: newRecorder(), refused: map[string]int{}}
	start(t, pcAP, cfgAP, ap)
	waitFor(t, 15*time.Second, "ap-south to hear that us-east refused it", func() bool {
		return ap.count("us-east") > 0
	})
	if n := ap.count("eu-west"); n != 0 {
		t.Fatalf("a peer that is down was reported as refusing %d times", n)
	}
}
