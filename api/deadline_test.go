package api

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

type testKey struct{}

// TestDeadlineCtx checks that withDeadline behaves as context.WithDeadline
// whether or not anything asked for Done before the end.
func TestDeadlineCtx(t *testing.T) {
	for _, early := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			parent := context.WithValue(context.Background(), testKey{}, "v")
			dl := time.Now().Add(time.Second)
			ctx, cancel := withDeadline(parent, dl)
			defer cancel()
			if early {
				_ = ctx.Done()
			}
			if got, ok := ctx.Deadline(); !ok || !got.Equal(dl) {
				t.Errorf("Deadline = %v %v, want %v", got, ok, dl)
			}
			if ctx.Value(testKey{}) != "v" {
				t.Error("the parent's value is lost")
			}
			if err := ctx.Err(); err != nil {
				t.Fatalf("Err before the deadline = %v", err)
			}
			time.Sleep(2 * time.Second) // fake time: past the deadline
			if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Err after the deadline = %v", err)
			}
			<-ctx.Done()
			if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Err once done = %v", err)
			}
		})
	}
}

func TestDeadlineCtxCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Stopped before Done was asked for.
		ctx, cancel := withDeadline(context.Background(), time.Now().Add(time.Hour))
		cancel()
		if err := ctx.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err after cancel = %v", err)
		}
		<-ctx.Done()

		// A derived context is cancelled with it.
		ctx, cancel = withDeadline(context.Background(), time.Now().Add(time.Hour))
		child, stopChild := context.WithCancel(ctx)
		defer stopChild()
		cancel()
		<-child.Done()
		if err := child.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("child's Err = %v", err)
		}

		// The parent's cancellation reaches it, asked for Done or not.
		for _, early := range []bool{false, true} {
			parent, stopParent := context.WithCancel(context.Background())
			ctx, cancel := withDeadline(parent, time.Now().Add(time.Hour))
			if early {
				_ = ctx.Done()
			}
			stopParent()
			if err := ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("early %v: Err after the parent's cancel = %v", early, err)
			}
			<-ctx.Done()
			cancel()
		}

		// A derived context's deadline passes with it.
		ctx, cancel = withDeadline(context.Background(), time.Now().Add(time.Second))
		defer cancel()
		child, stopChild = context.WithCancel(ctx)
		defer stopChild()
		<-child.Done()
		if err := child.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("child's Err after the deadline = %v", err)
		}

		// A parent's earlier deadline is the deadline.
		parent, stopParent := context.WithTimeout(context.Background(), time.Minute)
		defer stopParent()
		ctx, cancel = withDeadline(parent, time.Now().Add(time.Hour))
		defer cancel()
		if got, _ := ctx.Deadline(); !got.Equal(time.Now().Add(time.Minute)) {
			t.Errorf("Deadline = %v, want the parent's", got)
		}
	})
}
