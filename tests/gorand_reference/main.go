// Command gorand-reference prints the draws of Go's math/rand/v2 with a PCG source, for
// tests/simulate/test_gorand.py: per line, for one seed pair and count read from the arguments,
// Uint64, Float64, NormFloat64 and ExpFloat64 (the floats in hexadecimal, exact).
package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: gorand-reference SEED1 SEED2 COUNT")
		os.Exit(2)
	}
	seed1, err1 := strconv.ParseUint(os.Args[1], 10, 64)
	seed2, err2 := strconv.ParseUint(os.Args[2], 10, 64)
	count, err3 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || err3 != nil {
		fmt.Fprintln(os.Stderr, "SEED1 and SEED2 are unsigned 64-bit integers, COUNT a whole number")
		os.Exit(2)
	}
	r := rand.New(rand.NewPCG(seed1, seed2))
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for i := 0; i < count; i++ {
		fmt.Fprintf(out, "%d %x %x %x\n", r.Uint64(), r.Float64(), r.NormFloat64(), r.ExpFloat64())
	}
}
