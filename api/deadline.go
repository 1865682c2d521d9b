package api

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is the context of an operation bounded by the request
// deadline: what context.WithDeadline(parent, dl) returns, except that
// the timer, the channel and the registration with the parent that
// context.WithDeadline makes at once are made only when something asks
// for Done (or derives a context that needs it). Most operations — a
// local cart write — never wait on their context; they only carry values
// in it, and ask for Err, which it answers without them.
type deadlineCtx struct {
	parent context.Context
	dl     time.Time

	mu       sync.Mutex
	inner    atomic.Pointer[context.Context] // context.WithDeadline(parent, dl), once made
	cancel   context.CancelFunc
	canceled atomic.Bool
}

// withDeadline returns ctx bounded by dl and its cancel function, as
// context.WithDeadline does.
func withDeadline(parent context.Context, dl time.Time) (*deadlineCtx, context.CancelFunc) {
	c := &deadlineCtx{parent: parent, dl: dl}
	return c, c.stop
}

// made returns the context.WithDeadline context, making it on first use.
func (c *deadlineCtx) made() context.Context {
	if p := c.inner.Load(); p != nil {
		return *p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.inner.Load(); p != nil {
		return *p
	}
	ctx, cancel := context.WithDeadline(c.parent, c.dl)
	if c.canceled.Load() {
		cancel()
	}
	c.cancel = cancel
	c.inner.Store(&ctx)
	return ctx
}

func (c *deadlineCtx) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.canceled.Store(true)
	if c.cancel != nil {
		c.cancel()
	}
}

// Deadline returns the earlier of dl and the parent's deadline.
func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.dl) {
		return d, true
	}
	return c.dl, true
}

// Done makes the context.WithDeadline context and returns its channel.
func (c *deadlineCtx) Done() <-chan struct{} { return c.made().Done() }

// Err is what the context.WithDeadline context's Err would be: Canceled
// once stopped, the parent's error once it has one, DeadlineExceeded
// once dl has passed.
func (c *deadlineCtx) Err() error {
	if p := c.inner.Load(); p != nil {
		return (*p).Err()
	}
	if c.canceled.Load() {
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value looks key up in the context.WithDeadline context once it is
// made (so that contexts derived from c find its cancellation, as from
// the context it stands for), in the parent until then.
func (c *deadlineCtx) Value(key any) any {
	if p := c.inner.Load(); p != nil {
		return (*p).Value(key)
	}
	return c.parent.Value(key)
}
