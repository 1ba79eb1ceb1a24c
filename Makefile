# Makefile: `make` builds ./train_gpt2 (and ./tokenize), `make test` runs every test that needs no
# GPU, `make test-gpu` runs the GPU suite, `make enwik8` fetches and splits the corpus.
#
# Where a CUDA installation is found the program is built with the CUDA backend (cuBLAS/cuBLASLt,
# NCCL where found) and `make` also builds build/libattention.so; otherwise gcc builds a CPU-only
# program. A CUDA build falls back to the CPU when no GPU is visible. GPU architecture: read from
# nvidia-smi, or `make GPU_ARCH=90`; with no GPU present it builds sm_90 machine code plus
# compute_90 PTX, which the driver compiles for other GPUs.
#
# Choosing the build (use a separate BUILD=dir per choice, or `make clean` when switching):
#   make               CUDA when nvcc is on PATH with its CUDA installation beside it
#                      (NVCC/../include/cuda_runtime.h), or in $CUDA_HOME/bin; gcc otherwise (an
#                      nvcc without CUDA headers, e.g. a stray wrapper, gets a one-line note)
#   make CPU_ONLY=1    gcc only, whatever is installed (same as `make NVCC=`)
#   make CUDA=1        CUDA, or stop with one line when no CUDA installation is found
#   make NVCC=/path/to/nvcc   that nvcc, unchecked

BUILD      ?= build
CC         ?= gcc
ifeq ($(origin CC),default)
  CC := gcc
endif
CPU_ARCH   ?= native

# --- CPU or CUDA build -----------------------------------------------------------------------
cuda_root   = $(patsubst %/bin/nvcc,%,$(realpath $(shell command -v $(1) 2>/dev/null)))
cuda_header = $(wildcard $(call cuda_root,$(1))/include/cuda_runtime.h)
ifneq ($(filter-out 0,$(CPU_ONLY)),)
  ifneq ($(filter-out 0,$(CUDA)),)
    $(error CPU_ONLY=1 and CUDA=1 ask for opposite builds; give one)
  endif
  override NVCC :=
else ifeq ($(origin NVCC),undefined)
  NVCC_ON_PATH := $(shell command -v nvcc 2>/dev/null)
  ifneq ($(and $(NVCC_ON_PATH),$(call cuda_header,$(NVCC_ON_PATH))),)
    NVCC := $(NVCC_ON_PATH)
  else ifneq ($(and $(CUDA_HOME),$(call cuda_header,$(CUDA_HOME)/bin/nvcc)),)
    NVCC := $(CUDA_HOME)/bin/nvcc
  else
    NVCC :=
    ifneq ($(NVCC_ON_PATH),)
      ifeq ($(filter-out 0,$(CUDA)),)
        $(info note: $(NVCC_ON_PATH) has no CUDA installation beside it (no $(call cuda_root,$(NVCC_ON_PATH))/include/cuda_runtime.h): building the CPU-only program (CUDA_HOME=dir or NVCC=path to use one, CPU_ONLY=1 to silence this))
      endif
    endif
  endif
endif
ifneq ($(filter-out 0,$(CUDA)),)
  ifeq ($(NVCC),)
    $(error CUDA=1: no CUDA installation found (nvcc with include/cuda_runtime.h beside it, on PATH or in CUDA_HOME); install the CUDA toolkit or give NVCC=/path/to/nvcc)
  else ifeq ($(shell command -v $(NVCC) 2>/dev/null),)
    $(error CUDA=1: NVCC=$(NVCC) is not a command)
  endif
endif
ifeq ($(origin CUDA_HOME),undefined)
  CUDA_HOME := $(call cuda_root,$(NVCC))
endif

CFLAGS     ?= -O3 -march=$(CPU_ARCH)
CFLAGS     += -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -I. -MMD -MP
LDLIBS     := -lm

# Programs: train_gpt2.cu and every `*_main.c`; everything else is library code.
# Library code that has a CUDA counterpart provides a weak CPU-only definition of the symbol
# (e.g. model/cuda_fallback.c); the CUDA object's strong definition wins when it is linked.
C_SRCS     := $(filter-out %_main.c, $(wildcard attention/*.c layers/*.c data/*.c model/*.c train/*.c tokenizer/*.c))
CU_SRCS    := $(wildcard attention/*.cu layers/*.cu model/*.cu train/*.cu)
C_OBJS     := $(C_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/data/embedded_corpus.o
CU_OBJS    := $(CU_SRCS:%.cu=$(BUILD)/%.o)
CPU_LIB    := $(BUILD)/libcpu.a

TEST_SRCS  := $(wildcard test/test_*.c)
TEST_BINS  := $(TEST_SRCS:%.c=$(BUILD)/%)
GPU_TEST_SRCS := $(wildcard test/gpu/test_*.cu)
GPU_TEST_BINS := $(GPU_TEST_SRCS:%.cu=$(BUILD)/%)
DEV_C_BINS := $(patsubst %.c,$(BUILD)/%,$(filter-out dev/cupti_trace.c,$(wildcard dev/*.c))) # cupti_trace: mk/trace.mk
DEV_CU_BINS:= $(patsubst %.cu,$(BUILD)/%,$(wildcard dev/*.cu))

ifneq ($(NVCC),)
  GPU_ARCH ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ')
  ifeq ($(GPU_ARCH),)
    GENCODE := -gencode arch=compute_90,code=[sm_90,compute_90]
  else
    GENCODE := -gencode arch=compute_$(GPU_ARCH),code=[sm_$(GPU_ARCH),compute_$(GPU_ARCH)]
  endif
  NVCCFLAGS ?= -O3 -lineinfo
  NVCCFLAGS += -std=c++17 $(GENCODE) -I. -MMD -MP --expt-relaxed-constexpr \
               -Xcompiler -fopenmp,-march=$(CPU_ARCH),-Wall,-Wno-unused-parameter
  HAVE_NCCL := $(shell test -f $(CUDA_HOME)/include/nccl.h -o -f /usr/include/nccl.h -o -f /usr/local/include/nccl.h && echo 1)
  CUDA_LIBS := -lcublasLt -lcublas -lcudart
  ifeq ($(HAVE_NCCL),1)
    NVCCFLAGS += -DHAVE_NCCL
    CUDA_LIBS += -lnccl
  endif
  # cuDNN's fused attention (attention/cudnn.cu, `--attn cudnn`) needs cudnn.h and libcudnn (beside
  # CUDA or in /usr[/local]) and the header-only cudnn-frontend, looked for in this order:
  # CUDNN_FRONTEND=dir (its include/ directory, or the checkout holding it), local/cudnn-frontend/include,
  # $(HOME)/cudnn-frontend/include, then the system include directories. Without both the file is
  # left out of the build (and -lcudnn -lnvrtc out of the link): the registry then has no CUDA `cudnn`.
  # CUDNN_HOME=dir: a cuDNN installed elsewhere (dir/include/cudnn.h, dir/lib/libcudnn.so), e.g. the
  # folder of PyTorch's nvidia-cudnn wheel; the binaries then find it by their run path.
  CUDNN_HOME ?=
  HAVE_CUDNN := $(shell test -f $(CUDA_HOME)/include/cudnn.h -o -f /usr/include/cudnn.h -o -f /usr/local/include/cudnn.h \
                  -o -f /usr/include/$(shell gcc -print-multiarch 2>/dev/null)/cudnn.h \
                  $(if $(CUDNN_HOME),-o -f $(CUDNN_HOME)/include/cudnn.h) && echo 1)
  CUDNN_FE_DIRS := $(if $(CUDNN_FRONTEND),$(CUDNN_FRONTEND) $(CUDNN_FRONTEND)/include) local/cudnn-frontend/include \
                   $(HOME)/cudnn-frontend/include /usr/include /usr/local/include $(CUDA_HOME)/include
  CUDNN_FE_INC := $(patsubst %/cudnn_frontend.h,%,$(firstword $(wildcard $(addsuffix /cudnn_frontend.h,$(CUDNN_FE_DIRS)))))
  ifneq ($(CUDNN_FRONTEND),)
    ifeq ($(filter $(CUDNN_FRONTEND) $(CUDNN_FRONTEND)/include,$(CUDNN_FE_INC)),)
      $(error CUDNN_FRONTEND=$(CUDNN_FRONTEND) holds no cudnn_frontend.h (give the frontend's include/ directory))
    endif
  endif
  ifeq ($(and $(HAVE_CUDNN),$(CUDNN_FE_INC)),)
    CU_SRCS := $(filter-out attention/cudnn.cu,$(CU_SRCS))
    CU_OBJS := $(CU_SRCS:%.cu=$(BUILD)/%.o)
    ifeq ($(HAVE_CUDNN),1)
      $(info note: cuDNN found but not its frontend headers: --attn cudnn is not built (README, Quick start: one git clone))
    endif
  else
    # (NVRTC: the frontend compiles some of its own engines at run time)
    CUDA_LIBS += $(if $(CUDNN_HOME),-L$(CUDNN_HOME)/lib -Xlinker -rpath=$(CUDNN_HOME)/lib) -lcudnn -lnvrtc
    $(BUILD)/attention/cudnn.o $(BUILD)/pic/attention/cudnn.o: NVCCFLAGS += -isystem $(CUDNN_FE_INC) \
        $(if $(CUDNN_HOME),-isystem $(CUDNN_HOME)/include)
  endif
  MAIN_OBJ   := $(BUILD)/train_gpt2.o
  PROGRAM_OBJS := $(MAIN_OBJ) $(C_OBJS) $(CU_OBJS)
  LINK       := $(NVCC) $(GENCODE) -Xcompiler -fopenmp
  LINK_LIBS  := $(CUDA_LIBS) $(LDLIBS)
else
  MAIN_OBJ   := $(BUILD)/train_gpt2.o
  PROGRAM_OBJS := $(MAIN_OBJ) $(C_OBJS)
  LINK       := $(CC) -fopenmp
  LINK_LIBS  := $(LDLIBS)
endif

.PHONY: all test test-gpu bench clean enwik8
all: train_gpt2 tokenize $(if $(NVCC),libattention)

train_gpt2: $(PROGRAM_OBJS)
	$(LINK) -o $@ $(filter %.o,$^) $(LINK_LIBS)

tokenize: $(BUILD)/tokenizer/tokenize_main.o $(CPU_LIB)
	$(CC) -fopenmp -o $@ $^ $(LDLIBS)

# --- objects ---------------------------------------------------------------------------------
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

ifneq ($(NVCC),)
ifeq ($(filter-out 90,$(GPU_ARCH)),)
# The Hopper kernels of flash use sm_90a-only instructions (wgmma, setmaxnreg, TMA): those objects
# are built for sm_90a alone; for any other GPU_ARCH they build as stubs and flash.cu keeps its
# portable forward.
SM90A_FLAGS := -gencode arch=compute_90a,code=sm_90a -DFLASH_SM90=1
$(BUILD)/attention/flash_sm90.o $(BUILD)/pic/attention/flash_sm90.o: GENCODE := $(SM90A_FLAGS)
$(BUILD)/attention/flash_sm90_tma.o $(BUILD)/pic/attention/flash_sm90_tma.o: GENCODE := $(SM90A_FLAGS)
$(BUILD)/attention/flash_sm90_tma_bwd.o $(BUILD)/pic/attention/flash_sm90_tma_bwd.o: GENCODE := $(SM90A_FLAGS)
endif
endif

ifeq ($(NVCC),)
# Without nvcc the entry point is compiled as C: it holds no device code.
$(BUILD)/train_gpt2.o: train_gpt2.cu
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -x c -c $< -o $@
endif

# The embedded default corpus: the project's own text, linked into the binary.
CORPUS_FILES := README.md $(sort $(wildcard */README.md)) $(sort $(filter-out local/%,$(wildcard */*.h */*.c */*.cu))) train_gpt2.cu
$(BUILD)/corpus.txt: $(CORPUS_FILES)
	@mkdir -p $(dir $@)
	cat $^ > $@
$(BUILD)/data/embedded_corpus.o: data/embedded_corpus.S $(BUILD)/corpus.txt
	@mkdir -p $(dir $@)
	$(CC) -c -I$(BUILD) $< -o $@

$(CPU_LIB): $(C_OBJS)
	@rm -f $@
	ar rcs $@ $^

# --- tests -----------------------------------------------------------------------------------
$(BUILD)/test/%: test/%.c $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CPU_LIB) $(LDLIBS)

test: $(TEST_BINS) train_gpt2 tokenize
	@bash test/run.sh $(TEST_BINS) $(wildcard test/test_*.sh)

ifneq ($(NVCC),)
# (link only sources and objects: on a rebuild the -MMD dependency files add headers to $^)
$(BUILD)/test/gpu/%: test/gpu/%.cu $(C_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -o $@ $(filter %.cu %.o,$^) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/dev/%: dev/%.cu $(C_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -o $@ $(filter %.cu %.o,$^) $(CUDA_LIBS) $(LDLIBS)

test-gpu: $(GPU_TEST_BINS) train_gpt2
	@if [ -z "$(GPU_TEST_BINS)" ]; then echo "test-gpu: no GPU tests yet"; \
	 else bash test/run.sh $(GPU_TEST_BINS) $(wildcard test/gpu/test_*.sh); fi
else
test-gpu:
	@echo "test-gpu: this is a CPU-only build (no CUDA installation found, or CPU_ONLY=1); the GPU suite needs a CUDA build"; exit 1
endif

$(BUILD)/dev/%: dev/%.c $(CPU_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(CPU_LIB) $(LDLIBS)

bench: $(DEV_C_BINS) $(if $(NVCC),$(DEV_CU_BINS))

enwik8:
	bash data/get_enwik8.sh

clean:
	rm -rf $(BUILD) train_gpt2 tokenize

# Each part of the project may add its own targets in mk/NAME.mk (e.g. the attention shared
# library, the tokenizer's fuzzers).
include $(wildcard mk/*.mk)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
