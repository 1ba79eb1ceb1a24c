# mk/trace.mk: dev/cupti_trace.c, a CUPTI activity trace of any CUDA program (the lent GPU machines
# have no working nsys). Loaded through CUDA's injection hook, never linked into the trainer:
#   make build/dev/libcupti_trace.so
#   CUDA_INJECTION64_PATH=build/dev/libcupti_trace.so CUPTI_TRACE_OUT=t.csv ./train_gpt2 ...
#   python3 dev/trace_gaps.py t.csv
# CUPTI's header and library are looked for beside CUDA and in its extras/CUPTI folder.
ifneq ($(NVCC),)
CUPTI_DIRS := $(CUDA_HOME) $(CUDA_HOME)/extras/CUPTI
$(BUILD)/dev/libcupti_trace.so: dev/cupti_trace.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=gnu11 -Wall -Wextra -fPIC -shared -o $@ $< $(addprefix -I,$(addsuffix /include,$(CUPTI_DIRS))) \
	    $(foreach d,$(CUPTI_DIRS),-L$(d)/lib64 -L$(d)/lib -Wl,-rpath,$(d)/lib64 -Wl,-rpath,$(d)/lib) -lcupti
endif
