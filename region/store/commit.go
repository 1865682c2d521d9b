package store

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// syncerState is the state of a store's syncer.
type syncerState uint8

const (
	syncerNotStarted syncerState = iota
	syncerRunning
	syncerStopped // stopped, or could not be started
)

// waitDurable is group commit: it returns once an fsync covers the write
// just committed, and concurrent writers share fsyncs. The OnDurable
// functions of the writes an fsync covered run, in write order, before any
// of their writers returns; a writer whose write no successful fsync
// covered returns an error wrapping ErrStoreFailed, and its function is
// dropped.
//
// With more than one P (GOMAXPROCS), the first waiter fsyncs everything
// written so far while later writers queue; when it finishes, every writer
// its fsync covered returns, and the next waiter leads the next fsync.
// Writers that commit meanwhile run on the other Ps. When the last fsync
// was shared (writers are concurrent), the leader yields the processor
// once before it fsyncs, so that writers ready to run commit first and
// share its fsync rather than wait for the next one; a lone writer does
// not wait.
//
// With one P (GOMAXPROCS=1, as under a 1-CPU container limit) that does
// not work: an fsync holds the only P, so no other goroutine runs until
// it returns (the runtime hands the P of a goroutine in a system call to
// another thread only once sysmon has seen the call twice, and an idle
// sysmon sleeps up to 10 ms), and the runtime polls the network only when
// it has nothing else to run. A leader covered only the writes of
// goroutines already runnable: the HTTP handler whose next request was
// always waiting when it came back for it committed and fsynced alone,
// write after write, while the other connections' requests waited
// unpolled. So with one P the writers hand their fsyncs to the syncer
// (syncLoop), a goroutine woken through a pipe that the network poller
// watches: it runs only once the poller has been asked, together with
// the goroutines whose connections have data, and it yields once more so
// that they commit their writes before its fsync. (Goroutines that keep
// the P busy without blocking delay it, as they delay every network
// event, until sysmon polls the network, which it does once no poll
// happened for 10 ms.)
//
// A writer leads an fsync itself whenever none is running and the syncer
// has no kick to answer: with more than one P, if the syncer could not be
// started (no pipe), or once it has stopped (the store is closing).
func (s *Store) waitDurable(onDurable func()) error {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	s.written++
	seq := s.written
	if onDurable != nil {
		s.onDurable = append(s.onDurable, durableFunc{seq, onDurable})
	}
	if s.syncer != syncerStopped && runtime.GOMAXPROCS(0) == 1 {
		if s.syncer == syncerNotStarted {
			s.startSyncer()
		}
		if s.syncer == syncerRunning && !s.kicked {
			s.kicked = true
			kick := s.kick
			s.gmu.Unlock()
			_, err := kick.Write([]byte{1})
			s.gmu.Lock()
			if err != nil {
				// The pipe was closed (the syncer stops): no kick is on
				// its way, so this writer and those that counted on its
				// kick lead fsyncs themselves.
				s.kicked = false
				s.gcond.Broadcast()
			}
		}
	}
	for s.synced < seq {
		if s.failed.Load() {
			s.dropDurable(seq)
			if s.syncErr != nil {
				return fmt.Errorf("%w: fsync: %w", ErrWriteUnsure, s.syncErr)
			}
			return ErrWriteUnsure
		}
		if s.syncing || s.kicked && s.syncer == syncerRunning {
			s.gcond.Wait()
			continue
		}
		s.syncing = true
		if s.shared {
			s.gmu.Unlock()
			runtime.Gosched()
			s.gmu.Lock()
		}
		s.shared = s.written-s.synced > 1
		s.syncThrough(s.written)
	}
	return nil
}

// syncThrough fsyncs, covering the writes up to target, and wakes the
// waiters; the caller holds s.gmu and has set s.syncing. It releases s.gmu
// during the fsync.
func (s *Store) syncThrough(target uint64) {
	from := s.synced
	s.gmu.Unlock()
	start := time.Now()
	err := s.fsync()
	observe(s.metrics.FsyncSeconds, time.Since(start).Seconds())
	observe(s.metrics.FsyncBatch, float64(target-from))
	s.gmu.Lock()
	s.syncing = false
	if err != nil {
		s.syncErr = err
	} else {
		s.synced = target
		s.runDurable(target)
	}
	s.gcond.Broadcast()
}

// startSyncer starts the syncer, or marks it stopped if it cannot start;
// the caller holds s.gmu.
func (s *Store) startSyncer() {
	r, w, err := os.Pipe()
	if err != nil {
		s.log.Warn("group commit without a syncer: with GOMAXPROCS=1 fewer writes share an fsync", "err", err)
		s.syncer = syncerStopped
		return
	}
	s.syncer, s.kick, s.syncerDone = syncerRunning, w, make(chan struct{})
	go s.syncLoop(r)
}

// syncLoop is the syncer: woken by a kick, it yields once (so that
// writers made runnable together with it commit first), then fsyncs
// everything written so far, unless an fsync is running or nothing is
// left to fsync. Once the pipe's write end is closed and every kick
// answered, it stops.
func (s *Store) syncLoop(r *os.File) {
	defer close(s.syncerDone)
	defer r.Close()
	var buf [16]byte
	for {
		if _, err := r.Read(buf[:]); err != nil {
			break
		}
		runtime.Gosched()
		s.gmu.Lock()
		s.kicked = false
		if s.synced < s.written && !s.syncing && !s.failed.Load() {
			s.syncing = true
			s.syncThrough(s.written)
		}
		s.gcond.Broadcast()
		s.gmu.Unlock()
	}
	s.gmu.Lock()
	s.syncer = syncerStopped
	s.gcond.Broadcast()
	s.gmu.Unlock()
}

// stopSyncer stops the syncer, if it runs, and waits until it has.
func (s *Store) stopSyncer() {
	s.gmu.Lock()
	if s.syncer == syncerNotStarted {
		s.syncer = syncerStopped
	}
	kick, done := s.kick, s.syncerDone
	s.gmu.Unlock()
	if kick != nil {
		kick.Close()
		<-done
	}
}

// runDurable runs and forgets the OnDurable functions of the writes up to
// seq; the caller holds s.gmu.
func (s *Store) runDurable(seq uint64) {
	i := 0
	for ; i < len(s.onDurable) && s.onDurable[i].seq <= seq; i++ {
		s.onDurable[i].f()
		s.onDurable[i] = durableFunc{}
	}
	s.onDurable = s.onDurable[i:]
	if len(s.onDurable) == 0 {
		s.onDurable = s.onDurable[:0:0]
	}
}

// dropDurable forgets the OnDurable function of the seq-th write; the
// caller holds s.gmu.
func (s *Store) dropDurable(seq uint64) {
	for i, d := range s.onDurable {
		if d.seq == seq {
			s.onDurable = append(s.onDurable[:i], s.onDurable[i+1:]...)
			return
		}
	}
}

// fail stops the store taking writes.
func (s *Store) fail(err error) {
	if s.failed.CompareAndSwap(false, true) {
		// First: a failed fsync may have cost writes the kernel held,
		// so the next start must not take this run for one whose every
		// write the kernel kept (boot.go).
		s.dropBootRecord()
		s.log.Error("store failed; it takes no more writes until the region restarts", "err", err)
	}
}

// Failed reports whether the store stopped taking writes (see
// ErrStoreFailed).
func (s *Store) Failed() bool { return s.failed.Load() }

func (s *Store) fsync() error {
	if err := s.syncFile0(); err != nil {
		s.fail(fmt.Errorf("fsync: %w", err))
		return err
	}
	return nil
}

func (s *Store) syncFile0() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.closeSynced.Load() {
		// Closing: the close marker's fsync covered every write, and
		// the file may be closed already.
		return nil
	}
	if s.failed.Load() {
		// The store failed while this waited (a rewrite that failed after
		// renaming its file, say): what it would make durable may be only
		// in a file a restart does not use.
		return ErrStoreFailed
	}
	if s.syncFile == nil {
		return nil
	}
	if s.opts.FsyncDelay > 0 {
		time.Sleep(s.opts.FsyncDelay)
	}
	return s.syncFile.Sync()
}

// maintain fsyncs once a second in everysec mode and shrinks the file when
// it holds more than twice the live data.
func (s *Store) maintain() {
	defer close(s.done)
	defer s.stopSyncer()
	if !s.persist {
		<-s.stop
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.opts.Durability == config.DurabilityEverySec && !s.failed.Load() {
			s.gmu.Lock()
			target := s.written
			s.gmu.Unlock()
			if err := s.fsync(); err != nil {
				s.log.Error("fsync failed", "err", err)
			} else {
				s.gmu.Lock()
				s.synced = max(s.synced, target)
				s.gmu.Unlock()
			}
		}
		// Not while Open still counts the live data, nor once the store
		// has failed: a rewrite then could replace its only sound copy
		// (.prev) with a file it never made durable.
		if !s.opened.Load() || s.failed.Load() {
			continue
		}
		if err := s.MaybeShrink(); err != nil {
			s.log.Error("shrink failed", "err", err)
		}
	}
}
