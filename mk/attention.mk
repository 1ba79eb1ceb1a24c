# mk/attention.mk: the attention kernels as a shared library with a plain C API
# (attention/attention_api.h): `make libattention` builds build/libattention.so from position-
# independent copies of the attention objects under build/pic/: every CUDA file of attention/ that
# this build compiles (the Makefile's CU_SRCS: cudnn.cu only where cuDNN and its frontend are found)
# and the C files of attention/ (the registry and the CPU kernels it names).
ifneq ($(NVCC),)
ATTN_LIB      := $(BUILD)/libattention.so
ATTN_LIB_SRCS := $(filter attention/%,$(CU_SRCS)) $(wildcard attention/*.c)
ATTN_PIC_OBJS := $(addprefix $(BUILD)/pic/,$(addsuffix .o,$(basename $(ATTN_LIB_SRCS))))

.PHONY: libattention
libattention: $(ATTN_LIB)

$(BUILD)/pic/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Xcompiler -fPIC -c $< -o $@

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

$(ATTN_LIB): $(ATTN_PIC_OBJS)
	$(NVCC) $(GENCODE) -shared -Xcompiler -fopenmp -o $@ $^ -lcublas $(filter -lcudnn -lnvrtc,$(CUDA_LIBS))
else
libattention:
	@echo "libattention: this is a CPU-only build (no CUDA installation found, or CPU_ONLY=1); the library needs nvcc"; exit 1
endif
