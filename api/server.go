package api

import (
	"net/http"
	"time"
)

// Timeouts and limits of the HTTP server NewServer builds. WriteTimeout
// leaves room for the longest request the API serves: a causal wait of
// MaxWait followed by an operation of the request deadline.
const (
	ServerReadHeaderTimeout = 5 * time.Second
	ServerReadTimeout       = 15 * time.Second
	ServerWriteTimeout      = 30 * time.Second
	ServerIdleTimeout       = 2 * time.Minute
	ServerMaxHeaderBytes    = 64 << 10
)

// NewServer returns an HTTP server for h on addr with bounded timeouts and
// header size, so that slow or hostile clients cannot hold connections or
// memory. Run it with ListenAndServe or Serve; stop it with Shutdown.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ServerReadHeaderTimeout,
		ReadTimeout:       ServerReadTimeout,
		WriteTimeout:      ServerWriteTimeout,
		IdleTimeout:       ServerIdleTimeout,
		MaxHeaderBytes:    ServerMaxHeaderBytes,
	}
}
