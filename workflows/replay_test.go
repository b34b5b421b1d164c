package workflows

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"
)

// TestReplay replays histories recorded from real runs on the Temporal dev
// server (TestDevServer, exported with `temporal workflow show --output
// json`, see README.md) against the current workflow code. A change that
// would break a run in flight — different commands in a different order —
// fails here; guard such a change with workflow.GetVersion and record a new
// history next to the old ones.
func TestReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("want the five recorded histories in testdata, found %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(RetrainModel)
			r.RegisterWorkflow(RefreshPopularity)
			r.RegisterWorkflow(CheckDrift)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replaying %s: %v", f, err)
			}
		})
	}
}
