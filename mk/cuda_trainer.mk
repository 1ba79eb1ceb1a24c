# mk/cuda_trainer.mk: the CUDA trainer's test and benchmark links. The generic rules in the
# Makefile pass $^, which picks up the headers that the -MMD dependency file adds on a rebuild;
# these explicit rules link only the sources and objects.
ifneq ($(NVCC),)
$(BUILD)/test/gpu/test_trainer: test/gpu/test_trainer.cu $(C_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -o $@ $(filter %.cu %.o,$^) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/dev/bench_matmul_cuda: dev/bench_matmul_cuda.cu $(C_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -o $@ $(filter %.cu %.o,$^) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/dev/bench_trainer: dev/bench_trainer.cu $(C_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -o $@ $(filter %.cu %.o,$^) $(CUDA_LIBS) $(LDLIBS)
endif
