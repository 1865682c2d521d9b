package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/latticedb/lattice/region/regiontest"
)

// waitFor waits on a condition with a deadline (regiontest.WaitFor).
var waitFor = regiontest.WaitFor

// logBuf collects log output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hasLine reports whether one logged line contains every one of parts.
func (l *logBuf) hasLine(parts ...string) bool {
	for line := range strings.SplitSeq(l.String(), "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// newLogger returns a debug logger into a buffer that is printed if the
// test fails.
func newLogger(t *testing.T) (*slog.Logger, *logBuf) {
	t.Helper()
	buf := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// recorder is a Handler that records messages and peer events and echoes
// calls ("echo:" + request). A request "fail" makes OnCall fail; a request
// "block" makes it wait for its context to end, then count the
// cancellation.
type recorder struct {
	mu        sync.Mutex
	msgs      map[string][][]byte
	events    map[string][]bool
	cancelled int
}

func newRecorder() *recorder {
	return &recorder{msgs: make(map[string][][]byte), events: make(map[string][]bool)}
}

func (r *recorder) OnMessage(from string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[from] = append(r.msgs[from], payload)
}

func (r *recorder) OnCall(ctx context.Context, from string, payload []byte) ([]byte, error) {
	switch string(payload) {
	case "fail":
		return nil, fmt.Errorf("refusing %s", from)
	case "block":
		<-ctx.Done()
		r.mu.Lock()
		r.cancelled++
		r.mu.Unlock()
		return nil, ctx.Err()
	}
	return append([]byte("echo:"+from+":"), payload...), nil
}

func (r *recorder) OnPeer(peer string, connected bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events[peer] = append(r.events[peer], connected)
}

func (r *recorder) count(from string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[from])
}

func (r *recorder) messages(from string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs[from]...)
}

func (r *recorder) cancels() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled
}

func (r *recorder) peerEvents(peer string) []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.events[peer]...)
}

// checkInOrder fails unless got is exactly msg-0 … msg-(n-1).
func checkInOrder(t *testing.T, what string, got [][]byte, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%s: got %d messages, want %d", what, len(got), n)
	}
	for i, m := range got {
		if want := fmt.Sprintf("msg-%d", i); string(m) != want {
			t.Fatalf("%s: message %d is %q, want %q", what, i, m, want)
		}
	}
}
