package main

import (
	"context"
	"os"

	"github.com/clickrec/clickrec/loadtest"
)

func init() {
	register(command{name: "loadtest", synopsis: loadtest.Synopsis, run: func(ctx context.Context, args []string) error {
		return loadtest.Command(ctx, args, os.Stdout)
	}})
}
