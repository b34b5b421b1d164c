package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSessions writes n sessions cycling through 40 items (next = current + 1)
// in the Diginetica format, and test cases of the same pattern.
func writeSessions(t *testing.T, dir string, n int) (train, test string) {
	t.Helper()
	var tr, te strings.Builder
	for i := 0; i < n; i++ {
		s := i % 40
		fmt.Fprintf(&tr, "%d %d %d %d\n", s+1, (s+1)%40+1, (s+2)%40+1, (s+3)%40+1)
	}
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&te, "%d %d\t%d\n", i+1, (i+1)%40+1, (i+2)%40+1)
	}
	train, test = filepath.Join(dir, "train.txt"), filepath.Join(dir, "test.tsv")
	if err := os.WriteFile(train, []byte(tr.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(test, []byte(te.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return train, test
}

var small = []string{"--factors", "8", "--iterations", "2", "--epochs", "3", "--negatives", "16", "--batch-size", "32",
	"--learning-rate", "0.05", "--valid-cases", "100", "--log-level", "warn"}

func TestTrainUsageErrors(t *testing.T) {
	dir := t.TempDir()
	train, _ := writeSessions(t, dir, 50)
	out := filepath.Join(dir, "m")
	for name, args := range map[string][]string{
		"no data":      {"train", "--out", out},
		"no out":       {"train", "--data", train},
		"bad format":   {"train", "--data", train, "--out", out, "--format", "csv"},
		"bad factors":  {"train", "--data", train, "--out", out, "--factors", "0"},
		"bad decay":    {"train", "--data", train, "--out", out, "--decay", "2"},
		"bad seed":     {"train", "--data", train, "--out", out, "--seed", "-1"},
		"bad priors":   {"train", "--data", train, "--out", out, "--prior-weights", "0,x"},
		"unknown flag": {"train", "--nope"},
		"eval no test": {"eval", "--train", train, "--json", "-"},
		"eval model":   {"eval", "--train", train, "--test", train, "--json", "-", "--models", "pop,gru"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("%s: exit %d, want 2", name, code)
		}
	}
	t.Setenv("CLICKREC_TRAIN_FACTORS", "many")
	if code := run([]string{"train", "--data", train, "--out", out}); code != 2 {
		t.Errorf("bad CLICKREC_TRAIN_FACTORS: exit %d, want 2", code)
	}
	if code := run([]string{"train", "--data", filepath.Join(dir, "missing"), "--out", out, "--format", "diginetica", "--factors", "4"}); code != 1 {
		t.Errorf("missing data file: exit %d, want 1", code)
	}
}

func TestTrainThenEval(t *testing.T) {
	dir := t.TempDir()
	train, test := writeSessions(t, dir, 400)
	mdir := filepath.Join(dir, "model")
	t.Setenv("CLICKREC_TRAIN_FORMAT", "diginetica") // env fallback
	if code := run(append([]string{"train", "--data", train, "--out", mdir, "--version", "v-test"}, small...)); code != 0 {
		t.Fatalf("train: exit %d", code)
	}
	var md struct {
		Version     string  `json:"version"`
		Items       int     `json:"items"`
		PriorWeight float64 `json:"prior_weight"`
		Data        struct {
			Sessions int `json:"sessions"`
		} `json:"data"`
	}
	b, err := os.ReadFile(filepath.Join(mdir, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &md); err != nil || md.Version != "v-test" || md.Items != 40 || md.Data.Sessions != 400 {
		t.Fatalf("metadata %s (%v)", b, err)
	}

	// Evaluate the saved model and the baselines.
	report := filepath.Join(dir, "eval.json")
	if code := run([]string{"eval", "--train", train, "--test", test, "--json", report, "--model", mdir, "--log-level", "warn"}); code != 0 {
		t.Fatalf("eval: exit %d", code)
	}
	var res struct {
		Protocol string                        `json:"protocol"`
		Cases    int                           `json:"cases"`
		Models   map[string]map[string]float64 `json:"models"`
	}
	b, _ = os.ReadFile(report)
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	// The five models and served-full (the served model without retrieval).
	if res.Protocol == "" || res.Cases != 40 || len(res.Models) != 6 || res.Models["served-full"] == nil {
		t.Fatalf("report %s", b)
	}
	for _, m := range res.Models {
		for _, key := range []string{"hr@10", "hr@20", "mrr@20", "ndcg@10"} {
			if _, ok := m[key]; !ok {
				t.Fatalf("report lacks %s: %s", key, b)
			}
		}
	}
	if res.Models["served"]["hr@10"] < 0.9 {
		t.Errorf("served HR@10 = %v on a deterministic sequence", res.Models["served"]["hr@10"])
	}

	// Train inside eval and save the model with its metrics.
	saved := filepath.Join(dir, "saved")
	if code := run(append([]string{"eval", "--train", train, "--test", test, "--json", report, "--models", "served,pop", "--save", saved}, small...)); code != 0 {
		t.Fatalf("eval with training: exit %d", code)
	}
	b, err = os.ReadFile(filepath.Join(saved, "metadata.json"))
	if err != nil || !strings.Contains(string(b), `"offline_metrics"`) {
		t.Fatalf("saved metadata: %s (%v)", b, err)
	}
}
