package main

import "github.com/clickrec/clickrec/internal/cli"

func newFlagSet(name, synopsis string) *cli.FlagSet { return cli.NewFlagSet(name, synopsis) }
