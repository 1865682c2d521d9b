// Package deploy holds the files that deploy Lattice (an image built FROM
// scratch around the static binary, and Kubernetes manifests, one
// StatefulSet per region); its test checks them against the Kubernetes API
// types and against the cluster config they carry.
package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/latticedb/lattice/region/config"
)

// objects splits a multi-document manifest and decodes each document,
// strictly (an unknown field is an error), into the API type of its kind.
func objects(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for i, doc := range bytes.Split(b, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", path, i, head.Kind, err)
		}
		out = append(out, obj)
	}
	return out
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// TestKubernetesManifests decodes every manifest into the Kubernetes API
// types and checks each region's StatefulSet against the cluster config:
// the region it serves, its ports, probes on /healthz and /readyz, the
// mounts at the config's data_dir and tls_dir, the config file it reads,
// its certificates, a volume of its own, and an unprivileged container.
func TestKubernetesManifests(t *testing.T) {
	cm := objects(t, filepath.Join("kubernetes", "config.yaml"))[0].(*corev1.ConfigMap)
	cfg, err := config.Parse([]byte(cm.Data["lattice.yaml"]))
	if err != nil {
		t.Fatalf("the ConfigMap's lattice.yaml: %v", err)
	}
	for _, rc := range cfg.Regions {
		t.Run(rc.Name, func(t *testing.T) {
			objs := objects(t, filepath.Join("kubernetes", rc.Name+".yaml"))
			var sts *appsv1.StatefulSet
			services := map[string]*corev1.Service{}
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.StatefulSet:
					sts = o
				case *corev1.Service:
					services[o.Name] = o
				}
			}
			if sts == nil || len(services) != 2 {
				t.Fatalf("want a StatefulSet and two Services, got %d objects", len(objs))
			}
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
				t.Errorf("replicas %v: a region is one process on one store", sts.Spec.Replicas)
			}
			pod := sts.Spec.Template
			for k, v := range sts.Spec.Selector.MatchLabels {
				if pod.Labels[k] != v {
					t.Errorf("the selector's %s=%s is not on the pod template", k, v)
				}
			}
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			want := []string{"serve", "--config", "", "--region", rc.Name}
			if len(c.Args) < len(want) || c.Args[0] != "serve" || c.Args[3] != "--region" || c.Args[4] != rc.Name {
				t.Errorf("args %q, want %q…", c.Args, want)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			if mounts[cfg.DataDir] != "data" || mounts[cfg.TLSDir] != "certs" || mounts[filepath.Dir(c.Args[2])] != "config" {
				t.Errorf("mounts %v: want data at %s, certs at %s, config at %s", mounts, cfg.DataDir, cfg.TLSDir, filepath.Dir(c.Args[2]))
			}
			ports := map[string]corev1.ContainerPort{}
			for _, p := range c.Ports {
				ports[p.Name] = p
			}
			if p := ports["api"]; p.ContainerPort != port(t, rc.API) || p.Protocol != corev1.ProtocolTCP {
				t.Errorf("api port %+v, want TCP %d", p, port(t, rc.API))
			}
			if p := ports["peer"]; p.ContainerPort != port(t, rc.Peer) || p.Protocol != corev1.ProtocolUDP {
				t.Errorf("peer port %+v, want UDP %d", p, port(t, rc.Peer))
			}
			for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
				if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != "api" {
					t.Errorf("probe %+v, want GET %s on the api port", probe, path)
				}
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range pod.Spec.Volumes {
				volumes[v.Name] = v
			}
			if v := volumes["config"]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
				t.Errorf("config volume %+v, want ConfigMap %s", v, cm.Name)
			}
			if v := volumes["certs"]; v.Secret == nil || v.Secret.SecretName != "lattice-certs-"+rc.Name {
				t.Errorf("certs volume %+v, want secret lattice-certs-%s", v, rc.Name)
			}
			if i := slices.IndexFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == "data" }); i < 0 {
				t.Error("no volume claim template named data: the store would not outlive its pod")
			}
			sc := pod.Spec.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
				t.Error("the container must run as non-root on a read-only root file system")
			}
			if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 10 {
				t.Errorf("termination grace %v: a clean stop needs time to close the store", g)
			}
			for _, name := range []string{"lattice-" + rc.Name + "-api", "lattice-" + rc.Name + "-peer"} {
				svc := services[name]
				if svc == nil {
					t.Fatalf("no service %s", name)
				}
				for k, v := range svc.Spec.Selector {
					if pod.Labels[k] != v {
						t.Errorf("service %s selects %s=%s, not on the pod", name, k, v)
					}
				}
				p := svc.Spec.Ports[0]
				wantPort, proto := port(t, rc.API), corev1.ProtocolTCP
				if strings.HasSuffix(name, "-peer") {
					wantPort, proto = port(t, rc.DialPeer()), corev1.ProtocolUDP
				}
				if p.Port != wantPort || p.Protocol != proto {
					t.Errorf("service %s port %+v, want %s %d", name, p, proto, wantPort)
				}
			}
			if !strings.HasPrefix(rc.DialPeer(), "lattice-"+rc.Name+"-peer.") {
				t.Errorf("advertise_peer %q should name the region's peer load balancer", rc.DialPeer())
			}
		})
	}
}

// TestDockerfileIsScratch: the image holds the static binary alone.
func TestDockerfileIsScratch(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") {
			from = append(from, f[1])
		}
	}
	if fmt.Sprint(from) != "[scratch]" || !strings.Contains(string(b), "USER 65532") {
		t.Errorf("Dockerfile: FROM %v; want only scratch and an unprivileged user", from)
	}
}
