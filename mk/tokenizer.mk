# mk/tokenizer.mk: the tokenizer's extra targets.
#   make fuzz [FUZZ_SECONDS=N]   libFuzzer run of the vocabulary-file and token-file parsers,
#                                N seconds each (default 300; `make test` runs them 15 s each
#                                through test/test_fuzz.sh, which skips them without clang;
#                                `make fuzz` fails instead). Crashing inputs: build/fuzz/crashes/.
.PHONY: fuzz
fuzz:
	FUZZ_REQUIRE=1 FUZZ_SECONDS=$(or $(FUZZ_SECONDS),300) bash test/test_fuzz.sh
