package bench

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var progressLine = regexp.MustCompile(`(?m)^bench: (\S+) / (\S+), (\d+) ops/s, (\d+) errors, (\d+) writes pending convergence$`)

// TestReportProgress checks the progress lines: their content, and at
// most one per interval.
func TestReportProgress(t *testing.T) {
	var buf lockedBuffer
	var mu sync.Mutex
	var s progressSample
	ctx, cancel := context.WithCancel(context.Background())
	const interval = 20 * time.Millisecond
	start := time.Now()
	done := make(chan struct{})
	go func() {
		reportProgress(ctx, &buf, interval, start, 2*time.Second, func() progressSample {
			mu.Lock()
			defer mu.Unlock()
			s.done += 10 // 10 operations per sample
			s.failed, s.pending = 3, 7
			return s
		})
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(progressLine.FindAllString(buf.String(), -1)) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 5 progress lines in 10 s:\n%s", buf.String())
		}
		<-time.After(interval)
	}
	cancel()
	<-done
	elapsed := time.Since(start)
	lines := progressLine.FindAllStringSubmatch(buf.String(), -1)
	if max := int(elapsed/interval) + 1; len(lines) > max {
		t.Errorf("%d lines in %v at one per %v: more than %d", len(lines), elapsed, interval, max)
	}
	for _, l := range lines {
		if l[2] != "2s" || l[4] != "3" || l[5] != "7" {
			t.Errorf("line %q: want total 2s, 3 errors, 7 pending", l[0])
		}
		if rate, _ := strconv.Atoi(l[3]); rate <= 0 {
			t.Errorf("line %q: rate %d, want > 0", l[0], rate)
		}
	}
}
