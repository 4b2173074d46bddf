"""tdrm-rl benchmark suite (`make bench`): side-by-side ratios and breakdowns, never timing asserts."""
