package loadtest

import "testing"

func TestFlagValue(t *testing.T) {
	flags := []string{"--scorer", "go", "--x=1", "--model-dir=/m"}
	for name, want := range map[string]string{"scorer": "go", "x": "1", "model-dir": "/m", "absent": ""} {
		if got := flagValue(flags, name); got != want {
			t.Errorf("flagValue(%q) = %q, want %q", name, got, want)
		}
	}
}
