package api

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
)

// LoopbackOnly serves through h only the requests whose Host names a
// loopback address (localhost, 127.0.0.0/8, ::1, with any port); others
// are 403 forbidden. lattice dev listens on 127.0.0.1 without tokens: a
// web page could otherwise reach its API and console through a DNS name
// of its own pointed at 127.0.0.1 (DNS rebinding), since a browser sends
// that name as the Host.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackHost(r.Host) {
			h.ServeHTTP(w, r)
			return
		}
		id := requestIDOf(r)
		p := problem(CodeForbidden, "this region serves only requests addressed to a loopback host (localhost, 127.0.0.1, [::1])")
		p.RequestID = id
		b, _ := json.Marshal(p) // a Problem always encodes
		hdr := w.Header()
		hdr.Set(HeaderRequestID, id)
		hdr.Set("Content-Type", ProblemContentType)
		w.WriteHeader(p.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	})
}

// loopbackHost reports whether host (a Host header: name or address,
// with or without a port) names a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
