package server

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version and commit are set at link time by the Makefile's build:
//
//	-ldflags "-X github.com/latticedb/lattice/cmd/server.version=$(git describe --always --dirty)
//	          -X github.com/latticedb/lattice/cmd/server.commit=$(git rev-parse HEAD)"
var (
	version string
	commit  string
)

// BuildInfo names the build of the running binary.
type BuildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Build returns the build of the running binary: the version and commit
// set at link time, else those the Go toolchain stamped into the binary
// (vcs.revision, with -dirty when vcs.modified; the module version), else
// "unknown".
func Build() BuildInfo {
	b := BuildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if b.Commit == "" {
			b.Commit = rev
		}
		if b.Version == "" && rev != "" {
			b.Version = rev[:min(len(rev), 12)]
			if dirty {
				b.Version += "-dirty"
			}
		}
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
	}
	if b.Version == "" {
		b.Version = "unknown"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// buildInfoGauge is lattice_build_info{version,commit,goversion} 1.
func buildInfoGauge(b BuildInfo) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "lattice_build_info",
		Help:        "The build of the running binary: always 1, with its version, commit and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
