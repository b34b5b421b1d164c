package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

func init() {
	register(command{name: "version", synopsis: "print the build's version", run: func(ctx context.Context, args []string) error {
		fs := newFlagSet("version", "Print the module version and VCS revision of this build.")
		if err := fs.Parse(args); err != nil {
			return err
		}
		v, rev := "(devel)", "unknown"
		if bi, ok := debug.ReadBuildInfo(); ok {
			v = bi.Main.Version
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					rev = s.Value
				}
			}
		}
		fmt.Printf("clickrec %s (revision %s)\n", v, rev)
		return nil
	}})
}
