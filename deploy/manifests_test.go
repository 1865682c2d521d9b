package deploy

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestManifestsSetGOMAXPROCS: a StatefulSet whose CPU limit is below 2
// CPUs sets GOMAXPROCS to match it in its environment: Go (1.25 and later)
// derives at least 2 processors from a CPU limit (max(ceil(limit), 2)),
// and docs/operations.md describes the pods as running one.
func TestManifestsSetGOMAXPROCS(t *testing.T) {
	_, cfg := clusterConfig(t)
	for _, rc := range cfg.Regions {
		var sts *appsv1.StatefulSet
		for _, o := range objects(t, filepath.Join("kubernetes", rc.Name+".yaml")) {
			if s, ok := o.(*appsv1.StatefulSet); ok {
				sts = s
			}
		}
		if sts == nil {
			t.Fatalf("%s: no StatefulSet", rc.Name)
		}
		c := sts.Spec.Template.Spec.Containers[0]
		lim, ok := c.Resources.Limits[corev1.ResourceCPU]
		if !ok || lim.MilliValue() >= 2000 {
			continue
		}
		want := strconv.Itoa(int(math.Ceil(float64(lim.MilliValue()) / 1000)))
		env := ""
		for _, e := range c.Env {
			if e.Name == "GOMAXPROCS" {
				env = e.Value
			}
		}
		if env != want {
			t.Errorf("%s: CPU limit %s, GOMAXPROCS %q in the environment; want %q (Go derives at least 2 from a limit)", sts.Name, lim.String(), env, want)
		}
	}
}

// TestMakeImageBuildsLinuxBinary: the image is FROM scratch and runs
// deploy/lattice as its entry point, so make image builds a Linux
// executable whatever the host (on macOS, Docker Desktop's builds would
// otherwise hold a Mach-O binary: "exec format error").
func TestMakeImageBuildsLinuxBinary(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		if !strings.HasPrefix(l, "image:") {
			continue
		}
		for _, r := range lines[i+1:] {
			if !strings.HasPrefix(r, "\t") {
				break
			}
			if strings.Contains(r, "-o deploy/lattice") {
				found = true
				if !strings.Contains(r, "GOOS=linux") {
					t.Errorf("make image builds the image's binary for the host's OS: %q (want GOOS=linux)", strings.TrimSpace(r))
				}
			}
		}
	}
	if !found {
		t.Fatal("no recipe in make image builds deploy/lattice")
	}
}
