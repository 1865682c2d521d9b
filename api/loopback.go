package api

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// LoopbackOnly serves through h only the requests whose Host names a
// loopback address (localhost, 127.0.0.0/8, ::1, with any port); others
// are 403 forbidden. lattice dev listens on 127.0.0.1 without tokens: a
// web page could otherwise reach its API and console through a DNS name
// of its own pointed at 127.0.0.1 (DNS rebinding), since a browser sends
// that name as the Host.
//
// Nor does it serve a request a browser sent for a page of another site
// (an Origin header that is not a loopback one, or Sec-Fetch-Site:
// cross-site): a page may send a form or a no-cors fetch to 127.0.0.1
// itself, and the API's bodies are JSON in whatever content type.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		detail := ""
		switch {
		case !loopbackHost(r.Host):
			detail = "this region serves only requests addressed to a loopback host (localhost, 127.0.0.1, [::1])"
		case crossSite(r):
			detail = "this region serves no requests of pages of other sites (Origin or Sec-Fetch-Site)"
		default:
			h.ServeHTTP(w, r)
			return
		}
		id := requestIDOf(r)
		p := problem(CodeForbidden, detail)
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

// crossSite reports whether a browser sent r for a page that is not
// served from a loopback host.
func crossSite(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	return err != nil || !loopbackHost(u.Host) // "null" too: a sandboxed or opaque page
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
