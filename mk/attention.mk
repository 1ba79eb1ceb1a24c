# mk/attention.mk: the attention kernels as a shared library with a plain C API
# (attention/attention_api.h): `make libattention` builds build/libattention.so from position-
# independent copies of the CUDA objects under build/pic/.
ifneq ($(NVCC),)
ATTN_LIB      := $(BUILD)/libattention.so
ATTN_LIB_SRCS := attention/naive.cu attention/memeff.cu attention/flash.cu attention/flash_sm90.cu \
                 attention/cuda_table.cu attention/attention_api.cu
ATTN_PIC_OBJS := $(ATTN_LIB_SRCS:%.cu=$(BUILD)/pic/%.o)

.PHONY: libattention
libattention: $(ATTN_LIB)

$(BUILD)/pic/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Xcompiler -fPIC -c $< -o $@

$(ATTN_LIB): $(ATTN_PIC_OBJS)
	$(NVCC) $(GENCODE) -shared -o $@ $^ -lcublas
else
libattention:
	@echo "libattention: this is a CPU-only build (no CUDA installation found, or CPU_ONLY=1); the library needs nvcc"; exit 1
endif
