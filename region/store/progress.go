package store

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Opening a large store takes a while: BuntDB loads the whole file into
// memory, the store checks every value, and the region rebuilds its state
// from the keys (region.NewNode). For a file of at least
// Options.ProgressBytes the store logs a line when it starts, one every
// Options.ProgressEvery while it opens, and one when its opener says it
// is done (Opened), or when it closes first.

// Defaults of Options.ProgressBytes and Options.ProgressEvery.
const (
	DefaultProgressBytes = 100 << 20
	DefaultProgressEvery = 5 * time.Second
)

// Phases of an open, as the progress lines name them.
const (
	phaseLoad    = "loading the file"
	phaseCheck   = "checking every value"
	phaseRebuild = "rebuilding the region's state"
)

// opening reports the progress of one open.
type opening struct {
	s     *Store
	path  string // absolute, as /proc/self/fd links name it
	size  int64
	start time.Time
	phase atomic.Pointer[string]
	keys  atomic.Int64 // keys the current phase has read
	total atomic.Int64 // keys in the store, once loaded

	once sync.Once
	stop chan struct{}
	done chan struct{}
}

// startOpening starts reporting the open of the file at path, of size
// bytes, if it is large enough; nil if not.
func (s *Store) startOpening(path string, size int64) *opening {
	if s.opts.ProgressBytes < 0 || size < s.opts.ProgressBytes || size == 0 {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	o := &opening{s: s, path: abs, size: size, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	o.setPhase(phaseLoad)
	s.log.Info("opening the store: nothing is served until it is open", "path", path, "size_bytes", size)
	go o.report(s.opts.ProgressEvery)
	return o
}

func (o *opening) setPhase(p string) {
	if o == nil {
		return
	}
	o.keys.Store(0)
	o.phase.Store(&p)
}

// read counts keys read by the current phase.
func (o *opening) read(n int64) {
	if o != nil {
		o.keys.Add(n)
	}
}

func (o *opening) report(every time.Duration) {
	defer close(o.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		elapsed := time.Since(o.start)
		phase := *o.phase.Load()
		args := []any{"path", o.path, "phase", phase, "elapsed", elapsed.Round(time.Millisecond)}
		if phase == phaseLoad {
			if pos, ok := readPos(o.path); ok {
				args = append(args, "read_bytes", pos, "size_bytes", o.size,
					"percent", percent(pos, o.size), "mb_per_s", mbPerSec(pos, elapsed))
			}
		} else {
			keys, total := o.keys.Load(), o.total.Load()
			args = append(args, "keys_read", keys, "keys", total, "percent", percent(keys, total))
		}
		o.s.log.Info("opening the store", args...)
	}
}

// end stops the reports and logs how long the open took (opened: it
// completed; else the store closed first).
func (o *opening) end(opened bool) {
	if o == nil {
		return
	}
	o.once.Do(func() {
		close(o.stop)
		<-o.done
		took := time.Since(o.start)
		if opened {
			o.s.log.Info("store opened", "path", o.path, "size_bytes", o.size, "keys", o.total.Load(),
				"took", took.Round(time.Millisecond), "mb_per_s", mbPerSec(o.size, took))
		} else {
			o.s.log.Info("store closed before it was opened", "path", o.path, "took", took.Round(time.Millisecond))
		}
	})
}

// Opened tells the store that its opener has read what it needed at
// start-up and serves: it logs, for a store large enough to report its
// progress, how long the whole open took. region.NewNode calls it.
func (s *Store) Opened() {
	if o := s.opening.Swap(nil); o != nil {
		o.end(true)
	}
}

func percent(n, of int64) float64 {
	if of <= 0 {
		return 0
	}
	return float64(int64(float64(n)*1000/float64(of))) / 10
}

func mbPerSec(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(bytes)/1e6/d.Seconds()*10)) / 10
}

// readPos returns how far BuntDB has read the file at path while it loads
// it: the least offset of this process's descriptors open on it
// (/proc/self/fdinfo, Linux; false elsewhere).
func readPos(path string) (int64, bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	var least int64 = -1
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != path {
			continue
		}
		f, err := os.Open("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("pos:")); ok {
				if pos, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil && (least < 0 || pos < least) {
					least = pos
				}
				break
			}
		}
		f.Close()
	}
	return least, least >= 0
}
