# mk/bench.mk: the documents' experiments, one command each (see train/README.md, "Bench").
#   make bench-xformers-issue   ./train_gpt2 --bench xformers-issue  -> bench_out/xformers-issue/
#   make bench-flash-blog       ./train_gpt2 --bench flash-blog      -> bench_out/flash-blog/
#   make bench-grids            both, one after the other
# BENCH_ARGS adds options to each, e.g. BENCH_ARGS="--bench-quick --bench-max-seconds 150".
BENCH_GRIDS := bench-xformers-issue bench-flash-blog
.PHONY: $(BENCH_GRIDS) bench-grids
$(BENCH_GRIDS): bench-%: train_gpt2
	./train_gpt2 --bench $* --bench-out bench_out/$* $(BENCH_ARGS)
bench-grids: $(BENCH_GRIDS)
