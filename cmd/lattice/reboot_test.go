package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// emulateReboot makes the next start of region (stopped) under dataDir
// take its last run for one on an earlier boot of the machine, as after a
// power loss: it removes the record of the boot each of the region's
// stores runs on (data.db.boot), so that a run that wrote and was killed
// begins a new incarnation, as it would after the machine restarted.
func emulateReboot(t *testing.T, dataDir, region string) {
	t.Helper()
	removed := 0
	err := filepath.WalkDir(filepath.Join(dataDir, region), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "data.db.boot" {
			removed++
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if removed == 0 {
		t.Fatalf("emulating a reboot: %s holds no store that records its boot", filepath.Join(dataDir, region))
	}
}
